"""A run's photos before any training: read, kept to the taxonomy's labels, decoded into the image
cache, and split by case into training and held-out photos."""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from .cache import build_cache, default_cache_dir, subset
from .config import TrainConfig
from .data import data_fingerprint, filter_to_taxonomy, holdout_split, kfold_split, read_dataset
from .errors import DataError
from .progress import emit
from .taxonomy import Taxonomy

# Fewer photos of a sub-class than this: warned before any work (the portal asks a reason to activate such a model).
MIN_CLASS_PHOTOS = 20


def prepare_data(cfg: TrainConfig, taxonomy: Taxonomy, progress=None, should_stop=None):
    """Read, filter, fingerprint and cache. Returns a dict used by train/evaluate."""
    records, info = read_dataset(cfg.data)
    records, skipped = filter_to_taxonomy(records, taxonomy)
    if not records:
        raise DataError(f"no image of {cfg.data} has a label of the taxonomy (skipped: {skipped})")
    warn_small_classes(records, taxonomy)
    fp = data_fingerprint(records)
    cache_dir = cfg.cache_dir
    if cache_dir is None:
        cache_dir = default_cache_dir()
    t0 = time.time()
    images, ok, bad = build_cache(
        records,
        cfg.image_size,
        cache_dir or None,
        fp,
        progress=CacheProgress(progress),
        should_stop=should_stop,
        colour=cfg.colour_constancy,
    )
    cache_s = time.time() - t0
    keep = np.flatnonzero(ok)
    records = [records[i] for i in keep]
    images = subset(images, keep) if len(keep) != len(ok) else images
    sub_idx = {s: i for i, s in enumerate(taxonomy.sub_classes)}
    y_sub = np.array([sub_idx[r.label] for r in records], dtype=np.int64)
    y_meta = taxonomy.parent_index[y_sub]
    return {
        "records": records,
        "images": images,
        "y_sub": y_sub,
        "y_meta": y_meta,
        "fingerprint": fp,
        "skipped_labels": skipped,
        "bad_images": bad,
        "format": info["format"],
        "cache_seconds": cache_s,
    }


def warn_small_classes(records, taxonomy: Taxonomy) -> list[tuple[str, int]]:
    """Print (stderr) the sub-classes with fewer than MIN_CLASS_PHOTOS photos; returns them."""
    counts = Counter(r.label for r in records)
    small = [(s, counts.get(s, 0)) for s in taxonomy.sub_classes if counts.get(s, 0) < MIN_CLASS_PHOTOS]
    if small:
        print(
            f"warning: fewer than {MIN_CLASS_PHOTOS} photos of "
            + ", ".join(f"{s} ({n})" for s, n in small)
            + ": the model's answers for these classes will be unreliable",
            file=sys.stderr,
            flush=True,
        )
    return small


class CacheProgress:
    """Decoding progress as ``stage="cache"`` events, with the rate and the time left."""

    def __init__(self, progress):
        self.progress, self.t0, self.first = progress, time.time(), None

    def __call__(self, done: int, n: int):
        if self.first is None:  # a resumed build starts at the rows already done
            self.first, self.t0 = done, time.time()
            if done < n:
                return
        el = time.time() - self.t0
        rate = (done - self.first) / el if el > 0 and done > self.first else None
        emit(
            self.progress,
            stage="cache",
            batch=done,
            batches=n,
            images_per_second=rate,
            eta_seconds=(n - done) / rate if rate else None,
            elapsed_seconds=el,
        )


def make_split(cfg: TrainConfig, records):
    """(training indices, held-out indices, how they were split): K-fold, hold-out or none."""
    if cfg.folds:
        tr, te = kfold_split(records, cfg.folds, cfg.fold, cfg.seed)
        kind = {"kind": "kfold", "folds": cfg.folds, "fold": cfg.fold}
    elif cfg.holdout:
        tr, te = holdout_split(records, cfg.holdout, cfg.seed)
        kind = {"kind": "holdout", "fraction": cfg.holdout}
    else:
        tr, te = np.arange(len(records)), np.zeros(0, dtype=np.int64)
        kind = {"kind": "none"}
    return tr, te, kind


def subsample(idx, y, n, seed):
    """At most ``n`` of the photos ``idx``, stratified by ``y`` where it can be, sorted."""
    if n is None or n >= len(idx):
        return idx
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=y[idx], random_state=seed)
    except ValueError:
        keep = np.random.default_rng(seed).choice(idx, n, replace=False)
    return np.sort(keep)
