"""Dataset readers, case-grouped stratified splits, the decoded-image cache and batch augmentation.

Dataset directories:
- HAM10000 style: ``metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization) and
  ``images/<image_id>.jpg``; the case is ``lesion_id``.
- generic: ``labels.csv`` with columns image, label, case_id (case_id optional: the image is then
  its own case); ``image`` is relative to ``images/`` (or to the directory).

Public helpers: ``read_dataset(dir) -> (records, info)``, ``filter_to_taxonomy``,
``data_fingerprint``, ``load_image(path_or_pil, size, colour)``, ``colour_constancy``,
``holdout_split``, ``kfold_split``. The decoded-image cache is in cache.py; the augmentation is in
augment.py (its names are re-exported here for the callers that take them from this module).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .augment import (  # re-exported: callers take the augmentation names from data.py too
    AugmentConfig,  # noqa: F401
    Augmenter,  # noqa: F401
    BatchMixer,  # noqa: F401
    gaussian_blur,  # noqa: F401
    jpeg_roundtrip,  # noqa: F401
    normalise,  # noqa: F401
)
from .errors import DataError, SplitError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(DataError):
    """A data set directory or its label file that cannot be read (names the file and what is wrong)."""


@dataclass
class Record:
    image: str  # path relative to the dataset directory (stable id)
    path: str  # absolute path at run time (never stored in artefacts)
    label: str
    case_id: str
    meta: dict = field(default_factory=dict)


def _find_image(root: Path, name: str) -> Path:
    p = root / "images" / name
    if p.suffix.lower() in IMAGE_EXTS:
        if p.exists() or not (root / name).exists():
            return p
        return root / name
    for ext in IMAGE_EXTS:
        q = root / "images" / (name + ext)
        if q.exists():
            return q
    return root / "images" / (name + ".jpg")


def read_dataset(data_dir) -> tuple[list[Record], dict]:
    """Read a HAM10000-style or generic dataset directory (see module docstring)."""
    root = Path(data_dir)
    if (root / "metadata.csv").is_file():
        fmt, csv_path = "ham10000", root / "metadata.csv"
    elif (root / "labels.csv").is_file():
        fmt, csv_path = "generic", root / "labels.csv"
    else:
        raise DatasetError(f"{root}: expected metadata.csv (HAM10000 style) or labels.csv (image,label,case_id)")
    records = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        need = {"image_id", "dx"} if fmt == "ham10000" else {"image", "label"}
        if not need <= cols:
            raise DatasetError(f"{csv_path.name} lacks columns {sorted(need - cols)}")
        for row in reader:
            if fmt == "ham10000":
                name, label = row["image_id"].strip(), row["dx"].strip()
                case = (row.get("lesion_id") or name).strip()
                meta = {k: row.get(k) for k in ("dx_type", "age", "sex", "localization") if k in row}
            else:
                name, label = row["image"].strip(), row["label"].strip()
                case = (row.get("case_id") or "").strip() or name
                meta = {k: v for k, v in row.items() if k not in ("image", "label", "case_id")}
            if not name:
                continue
            p = _find_image(root, name)
            records.append(Record(str(p.relative_to(root)), str(p), label, case, meta))
    if not records:
        raise DatasetError(f"{csv_path} lists no images")
    return records, {"format": fmt, "n_rows": len(records)}


def filter_to_taxonomy(records: Sequence[Record], taxonomy) -> tuple[list[Record], dict[str, int]]:
    """Keep records whose label is a sub-class of the taxonomy; count the others per label."""
    kept, skipped = [], Counter()
    for r in records:
        if r.label in taxonomy:
            kept.append(r)
        else:
            skipped[r.label] += 1
    return kept, dict(sorted(skipped.items()))


def data_fingerprint(records: Sequence[Record]) -> str:
    """sha256 over (relative image path, file size, label, case) of every record, order-independent."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.image):
        try:
            size = os.path.getsize(r.path)
        except OSError:
            size = -1
        h.update(f"{r.image}\t{size}\t{r.label}\t{r.case_id}\n".encode())
    return h.hexdigest()[:16]


COLOUR_CONSTANCY = ("none", "shades_of_gray")


def check_colour_constancy(method: str) -> str:
    """``method`` if it is one of ``COLOUR_CONSTANCY``, else a ValueError that lists them."""
    if method not in COLOUR_CONSTANCY:
        raise ValueError(f"colour constancy {method!r} is unknown; choose one of {', '.join(COLOUR_CONSTANCY)}")
    return method


def colour_constancy(img: np.ndarray, method: str = "shades_of_gray", p: int = 6) -> np.ndarray:
    """Colour constancy of one uint8 H x W x 3 photo (returns a new uint8 array).

    "shades_of_gray" (Finlayson & Trezzi 2004, as in Barata et al. 2015 for dermoscopy): the
    illuminant of each channel is its Minkowski p-norm mean ``(mean(I_c^p))^(1/p)``; every channel
    is scaled so that the illuminant becomes grey of the same length (gains
    ``1 / (sqrt(3) * e_c / ||e||)``), then clipped to 0..255. A photo taken under another light or
    white balance (a per-channel gain) gives the same result up to clipping, so a model trained on
    corrected photos does not learn the colour cast of one camera or clinic. "none" returns the
    photo unchanged.
    """
    if check_colour_constancy(method) == "none":
        return img
    # uint8 photos take 256 values per channel: the p-th powers and the corrected values are looked
    # up per channel value instead of computed per pixel (3x faster, the same result)
    px = img.reshape(-1, 3)
    levels = np.arange(256, dtype=np.float64)
    hist = np.stack([np.bincount(px[:, c], minlength=256) for c in range(3)])  # (3, 256)
    e = np.power(hist @ np.power(levels / 255.0, p) / max(len(px), 1), 1.0 / p)
    norm = float(np.sqrt((e**2).sum()))
    if norm < 1e-6:  # an all-black photo has no illuminant to estimate
        return img
    gains = norm / (np.sqrt(3.0) * np.maximum(e, 1e-6))
    lut = np.clip(levels[None, :] * gains[:, None] + 0.5, 0, 255).astype(np.uint8)  # (3, 256)
    return np.stack([lut[c][img[..., c]] for c in range(3)], axis=-1)


def load_image(src, size: int, colour: str = "none") -> np.ndarray:
    """Decode (path or PIL image), fix EXIF orientation, RGB, resize the shorter side to ``size``,
    centre-crop to ``size`` x ``size`` and apply ``colour`` constancy (``colour_constancy``).
    Returns uint8 HxWx3."""
    im = Image.open(src) if not isinstance(src, Image.Image) else src
    if isinstance(src, Image.Image):
        im = src
    else:
        im.draft("RGB", (size, size))  # fast JPEG decode at reduced scale when possible
    im = ImageOps.exif_transpose(im) if not isinstance(src, Image.Image) else im
    im = im.convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, t = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, t, left + size, t + size))
    return colour_constancy(np.asarray(im, dtype=np.uint8), colour)


# ---------------------------------------------------------------------- splits
def _case_labels(records: Sequence[Record]):
    cases = [r.case_id for r in records]
    labels = [r.label for r in records]
    return np.array(cases), np.array(labels)


def kfold_split(records: Sequence[Record], folds: int, fold: int, seed: int = 0):
    """Label-stratified, case-grouped K-fold; returns (train_idx, test_idx) of fold ``fold``."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}")
    cases, labels = _case_labels(records)
    n_cases = len(set(cases.tolist()))
    if n_cases < folds:
        raise DatasetError(f"need at least {folds} cases for {folds} folds, found {n_cases}")
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for i, (tr, te) in enumerate(sgkf.split(np.zeros(len(labels)), labels, cases)):
                if i == fold:
                    return np.sort(tr), np.sort(te)
        except ValueError as exc:  # scikit-learn: every class has fewer photos than there are folds
            raise SplitError(str(exc)) from exc
    raise AssertionError


def holdout_split(records: Sequence[Record], fraction: float = 0.2, seed: int = 0):
    """Case-grouped, label-stratified hold-out of about ``fraction`` of the cases."""
    if not 0 < fraction < 1:
        raise ValueError("holdout fraction must be in (0, 1)")
    folds = max(2, int(round(1 / fraction)))
    return kfold_split(records, folds, 0, seed)


def split_by_cases(records: Sequence[Record], test_cases: set[str]):
    test = np.array([i for i, r in enumerate(records) if r.case_id in test_cases], dtype=np.int64)
    train = np.array([i for i, r in enumerate(records) if r.case_id not in test_cases], dtype=np.int64)
    return train, test
