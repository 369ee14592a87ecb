"""Training: fine model (sub-classes) -> granularity transfer -> coarse model (meta-classes).

Public API (stable):

    from inference.ml.train import TrainConfig, train, TrainingCancelled
    path = train(TrainConfig(data="DIR", taxonomy="tax.json", out="models/x"),
                 progress=lambda d: print(d), should_stop=lambda: False)

``progress`` receives dicts with keys stage ("cache" | "fine" | "coarse" | "binary" | "evaluate"),
epoch, epochs, batch, batches, loss, eta_seconds (remaining time of the stage), images_per_second,
elapsed_seconds (time in the stage so far).
``should_stop()`` is polled between batches; when it returns True ``TrainingCancelled`` is raised
and no completed artefact is left (``model.json`` is written last, after everything else).
Checkpoints are written to ``<out>/.work`` after every epoch; calling ``train`` again with the same
config resumes from the last completed epoch.

A run, module by module: config.py (settings, their checks, the recipe's defaults), prepare.py (photos,
image cache, split by case), stages.py (fine, coarse and binary models, evaluation), fit.py (one stage's
training loop, with losses.py, linear_probe.py and progress.py); this module ties them together and
writes the artefact (artefact.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from . import artefact as art
from . import budget, distributed, quantize
from .budget import choose_image_size
from .config import (
    AUTO_EPOCHS_RULE,
    BALANCES,
    HEAD_INITS,
    SUBCLASS_BALANCES,
    TrainConfig,
    check_class_balance,
    check_config,
    check_layer_decay,
    check_progressive,
    epochs_for,
    preprocessing_for,
)
from .data import filter_to_taxonomy, read_dataset
from .device import resolve_device
from .errors import TrainingCancelled
from .fit import WeightAverage, fit, lr_at, make_optimizer, training_features
from .linear_probe import probe_head
from .losses import class_weights, logit_offsets, loss_fn, mixed_loss, weighted_loss
from .metadata import FILE as METADATA_FILE
from .networks import freeze_first_blocks, frozen_modules, parse_cut
from .prepare import make_split, prepare_data, subsample
from .progress import RecentSpeed, check_stop, emit, eta_seconds
from .stages import Run, binary_model, build_model, coarse_frozen, coarse_model, evaluate_models, fine_models
from .taxonomy import Taxonomy

__all__ = [  # the API, and the helpers bench/ and the tests take from here
    "TrainConfig",
    "TrainingCancelled",
    "train",
    "resolve_image_size",
    "keep_freed_memory",
    "AUTO_EPOCHS_RULE",
    "BALANCES",
    "HEAD_INITS",
    "SUBCLASS_BALANCES",
    "check_class_balance",
    "check_layer_decay",
    "check_progressive",
    "epochs_for",
    "preprocessing_for",
    "WeightAverage",
    "fit",
    "lr_at",
    "make_optimizer",
    "training_features",
    "probe_head",
    "class_weights",
    "logit_offsets",
    "loss_fn",
    "mixed_loss",
    "weighted_loss",
    "frozen_modules",
    "prepare_data",
    "RecentSpeed",
    "eta_seconds",
    "build_model",
    "coarse_frozen",
]


def keep_freed_memory():
    """Ask glibc malloc to keep freed blocks instead of unmapping them after every step.

    Activations above 32 MB (batch 32 at 192 px and more) are otherwise mmap'ed and unmapped on
    every step, and the kernel zeroes fresh pages each time (half the CPU time went to the
    kernel). No-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    ok = mallopt(M_MMAP_MAX, 0) == 1
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    mallopt(M_TOP_PAD, 256 << 20)
    return ok


def train(
    config: TrainConfig, progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
) -> Path:
    """Train the hierarchy of ``config`` into the artefact directory ``config.out``; returns it."""
    out = Path(config.out)
    if (out / art.MANIFEST).is_file():
        emit(progress, stage="done", event="already_complete")
        return out
    distributed.init(resolve_device(config.device))  # torchrun: join the other processes
    if not distributed.is_main():
        progress = None  # rank 0 reports
    run = _start(config, out, progress, should_stop)
    fines, fine_infos = fine_models(run)
    coarse, coarse_info = coarse_model(run, fines[0])
    binary, binary_info = binary_model(run)
    check_stop(should_stop)
    if not distributed.is_main():  # rank 0 alone evaluates and writes the one artefact
        return out
    results = evaluate_models(run, fines, coarse, binary)
    run.timings["total"] = time.time() - run.started
    check_stop(should_stop)
    manifest = _manifest(run, fine_infos, coarse_info, binary_info, results)
    _write_artefact(out, run, fines, coarse, binary, results, manifest)
    _fit_triage(out, run)
    emit(progress, stage="done", event="complete", seconds=run.timings["total"])
    return out


def _fit_triage(out: Path, run: Run) -> None:
    """Calibrated urgency tiers and the unfamiliar-photo detector from the held-out split (triage_fit.py).
    The artefact is complete without them (its tiers then abstain), so a data problem here is reported, not raised."""
    cfg = run.cfg
    if not cfg.triage or not len(run.te) or not run.tax.has_grades:
        return
    from .triage_fit import fit_triage

    try:
        fit_triage(out, cfg.data, modality=cfg.modality, progress=run.progress)
    except ValueError as exc:
        emit(run.progress, stage="triage", message=f"no triage calibration: {exc}")


def _start(cfg: TrainConfig, out: Path, progress, should_stop) -> Run:
    """Threads and seeds, checks, the work directory, the image size, then the photos and their split."""
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    keep_freed_memory()
    train_seed = cfg.seed if cfg.train_seed is None else cfg.train_seed
    random.seed(train_seed)
    np.random.seed(train_seed)
    torch.manual_seed(train_seed)
    tax = Taxonomy.from_dict(cfg.taxonomy) if isinstance(cfg.taxonomy, dict) else Taxonomy.from_json(cfg.taxonomy)
    check_config(cfg, tax)
    work = out / ".work"
    settings = _open_work(cfg, out, work)
    started = time.time()
    size_choice = None
    if not distributed.is_main():
        distributed.barrier()  # rank 0 chooses the size and decodes the cache first
    if cfg.image_size is None:
        size_choice = resolve_image_size(cfg, tax, work, progress)
        cfg = replace(cfg, image_size=size_choice["chosen"])
        if cfg.progressive_size is None and size_choice.get("progressive_size"):
            cfg = replace(cfg, progressive_size=size_choice["progressive_size"])
        check_progressive(cfg)
    D = _prepare_once(cfg, tax, work, progress, should_stop)
    tr, te, split_kind = make_split(cfg, D["records"])
    tr = subsample(tr, D["y_sub"], cfg.max_train_images, cfg.seed)
    split = {**split_kind, "seed": cfg.seed}
    cfg = replace(cfg, seed=train_seed)  # from here on cfg.seed is training's
    fine_epochs, coarse_epochs = epochs_for(cfg, len(tr))
    return Run(
        cfg,
        tax,
        work,
        D,
        tr,
        te,
        fine_epochs,
        coarse_epochs,
        progress,
        should_stop,
        timings={"cache": D["cache_seconds"]},
        settings=settings,
        size_choice=size_choice,
        split=split,
        started=started,
    )


def _prepare_once(cfg: TrainConfig, tax: Taxonomy, work: Path, progress, should_stop) -> dict:
    """prepare_data; with several processes rank 0 decodes the cache while the others wait, then they read it."""
    D = prepare_data(cfg, tax, progress, should_stop)
    if distributed.is_main():
        distributed.barrier()  # the others wait at the barrier in _start
    return D


def _open_work(cfg: TrainConfig, out: Path, work: Path) -> dict:
    """Create ``work`` and keep the run's settings there; refuse to resume a run with other settings."""
    work.mkdir(parents=True, exist_ok=True)
    settings = cfg.resolved()
    settings_file = work / "settings.json"
    if settings_file.is_file():
        old = json.loads(settings_file.read_text())
        if old != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{out} holds an unfinished run with different settings; "
                "use another --out or delete its .work directory"
            )
    else:
        art.write_json(settings_file, settings)
    return settings


def resolve_image_size(cfg: TrainConfig, tax: Taxonomy, work: Path, progress=None) -> dict:
    """The image size of a run whose ``image_size`` is unset (budget.choose_image_size), with how it
    was chosen. Kept in ``work`` so that a resumed run keeps it; a run with ``fine_from`` takes the
    size of the reused fine model."""
    kept = work / "image_size.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    if cfg.fine_from:
        size = int(art.read_manifest(cfg.fine_from)["preprocessing"]["size"])
        choice = budget.size_choice(size, f"{size} px, as the reused fine model", **{"from": "fine_from"})
    else:
        emit(
            progress,
            stage="image_size",
            event="probe",
            sizes=list(budget.AUTO_SIZES),
            message=f"timing a few training steps at {budget.AUTO_SIZES[0]} px to choose the image size",
        )
        choice = _probe_image_size(cfg, tax)
    emit(progress, stage="image_size", event="chosen", **choice)
    art.write_json(kept, choice)
    return choice


def _probe_image_size(cfg: TrainConfig, tax: Taxonomy) -> dict:
    """Time a few training steps of the run's networks and let budget.choose_image_size choose."""
    records, _ = read_dataset(cfg.data)
    records, _ = filter_to_taxonomy(records, tax)
    tr, _, _ = make_split(cfg, records)
    n_train = len(tr) if cfg.max_train_images is None else min(len(tr), cfg.max_train_images)
    fine_epochs, coarse_epochs = epochs_for(cfg, n_train)

    def make_fine(size):  # the network does not depend on the size; the probe feeds it
        m = build_model(cfg, len(tax.sub_classes))
        freeze_first_blocks(m, cfg.freeze_blocks)
        return m

    def make_coarse(size):
        m = build_model(cfg, len(tax.meta_classes))
        coarse_frozen(cfg, m, parse_cut(cfg.transfer_cut, m))
        return m

    # the probe's networks and random photos must not move the run's draws: a run whose size the probe
    # chose trains the model the same run with that size set trains (how many probes run depends on the CPU)
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        _, choice = choose_image_size(
            make_fine,
            make_coarse,
            max(1, n_train),
            fine_epochs,
            coarse_epochs,
            max(1, int(cfg.fine_models)),
            cfg.batch_size,
            cfg.image_budget_minutes,
            cfg.channels_last,
            progressive_share=cfg.progressive_share if cfg.progressive_size is None else None,
            probe_epochs=budget.PROBE_EPOCHS if cfg.head_init == "probe" else 0.0,
        )
    random.setstate(py_state)
    np.random.set_state(np_state)
    choice["n_train"] = n_train
    return choice


def _manifest(run: Run, fine_infos: list[dict], coarse_info: dict, binary_info: dict | None, results: dict) -> dict:
    """``model.json``: what the artefact holds and how it was trained; written last."""
    cfg, tax, D, meta_models = run.cfg, run.tax, run.data, results["metadata"]
    y_sub, records = D["y_sub"], D["records"]
    return {
        "format_version": art.FORMAT_VERSION,
        "backbone": cfg.backbone,
        "num_fine": len(tax.sub_classes),
        "num_coarse": len(tax.meta_classes),
        "fine_members": len(fine_infos),
        "transfer_cut": coarse_info["cut"],
        "preprocessing": preprocessing_for(cfg),
        "tta": cfg.tta,
        "positive": cfg.positive,
        "has_binary": binary_info is not None,
        "training": {
            **run.settings,
            "image_size": cfg.image_size,
            "progressive_size": cfg.progressive_size,
            "image_size_choice": run.size_choice,
            "epochs": run.fine_epochs,
            "coarse_epochs": run.coarse_epochs,
            "epochs_set": {"fine": cfg.epochs is not None, "coarse": cfg.coarse_epochs is not None},
            "device": str(resolve_device(cfg.device)),
            "processes": distributed.world_size(),
        },
        "seed": run.split["seed"],
        "train_seed": cfg.seed,
        "data": {
            "fingerprint": D["fingerprint"],
            "format": D["format"],
            "n_images": len(records),
            "n_train": int(len(run.tr)),
            "n_test": int(len(run.te)),
            "skipped_labels": D["skipped_labels"],
            "bad_images": D["bad_images"],
            "class_counts": {s: int((y_sub == i).sum()) for i, s in enumerate(tax.sub_classes)},
        },
        "split": {**run.split, "test_cases": sorted({records[i].case_id for i in run.te})},
        "int8_calibration": None
        if results["int8"] is None
        else {"file": quantize.FILE, "images": results["int8_images"], "source": "training split"},
        "metadata": None
        if meta_models is None
        else {
            "file": METADATA_FILE,
            "fields": {k: len(v) for k, v in meta_models[0].tables.items()},
            "alpha": cfg.metadata_alpha,
            "weight": cfg.metadata_weight,
            "source": "training split",
        },
        "ood": {
            "method": "cosine distance of fine-model features to the nearest training class mean",
            "threshold": results["ood_threshold"],
            "quantile": cfg.ood_quantile,
        },
        "timings_seconds": run.timings,
        "train_images_per_second": {
            "fine": fine_infos[0]["images_per_second"],
            "coarse": coarse_info["images_per_second"],
        },
        "fine_training": fine_infos[0],
        "coarse_training": coarse_info,
        "binary_training": binary_info,
        "fine_members_training": fine_infos,
        "code_version": art.code_version(),
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_artefact(out: Path, run: Run, fines, coarse, binary, results: dict, manifest: dict) -> None:
    """Write every file into ``.partial``, move them into ``out``, the manifest last (it marks the
    artefact complete), and remove the work directory."""
    part = out / ".partial"
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    run.tax.to_json(part / "taxonomy.json")
    for k, m in enumerate(fines):
        art.save_state(m, part / art.fine_file(k))
    art.save_state(coarse, part / "coarse.safetensors")
    if binary is not None:
        art.save_state(binary, part / "binary.safetensors")
    save_file({"class_means": torch.from_numpy(results["ood_means"])}, str(part / "ood.safetensors"))
    if results["int8"] is not None:
        save_file(results["int8"], str(part / quantize.FILE))
    if results["metadata"] is not None:
        fine_meta, coarse_meta = results["metadata"]
        art.write_json(part / METADATA_FILE, {"fine": fine_meta.to_dict(), "coarse": coarse_meta.to_dict()})
    art.write_json(part / "metrics.json", results["metrics"] or {})
    for f in part.iterdir():
        os.replace(f, out / f.name)
    art.write_json(out / art.MANIFEST, manifest)  # marks the artefact complete
    shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(run.work, ignore_errors=True)
