"""The stages of a training run once its photos are ready: the fine model(s) on sub-classes, the
coarse model on meta-classes transferred from the first fine model, the optional binary baseline,
and the evaluation on the held-out photos."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import artefact as art
from . import quantize
from .cache import subset
from .config import TrainConfig, member_config, preprocessing_for
from .data import split_by_cases
from .device import model_device
from .errors import ArtefactError
from .evaluate import metadata_report, report_from_probs
from .fit import fit
from .infer import model_outputs, ood_fit
from .metadata import fit_levels
from .networks import Classifier, freeze_first_blocks, freeze_prefixes, parse_cut, transfer_cut, transferred_prefixes
from .prepare import subsample
from .progress import check_stop, emit, member_progress
from .taxonomy import Taxonomy
from .weights import has_imagenet, load_imagenet


@dataclass
class Run:
    """What every stage of one run reads: its settings, photos and split."""

    cfg: TrainConfig  # seed: the seed of training's draws (train_seed, else seed)
    tax: Taxonomy
    work: Path  # <out>/.work: settings and checkpoints of the unfinished run
    data: dict  # prepare_data's: records, images, y_sub, y_meta, fingerprint, ...
    tr: np.ndarray  # training photos (indices into data["records"])
    te: np.ndarray  # held-out photos
    fine_epochs: int
    coarse_epochs: int
    progress: Callable | None
    should_stop: Callable | None
    timings: dict = field(default_factory=dict)  # seconds of each stage, for the manifest
    settings: dict = field(default_factory=dict)  # TrainConfig.resolved() as the run was asked
    size_choice: dict | None = None  # how an unset image size was chosen
    split: dict = field(default_factory=dict)  # how the photos were split (kind, seed)
    started: float = 0.0  # time.time() at the start, for the total


def build_model(cfg: TrainConfig, num_classes: int) -> Classifier:
    """The stage's network with a new head, from ImageNet weights where the backbone has them."""
    m = Classifier(cfg.backbone, num_classes, drop_path_rate=cfg.drop_path)
    if cfg.pretrained and has_imagenet(cfg.backbone):
        load_imagenet(m)
    return m


def coarse_frozen(cfg: TrainConfig, coarse: Classifier, cut) -> list[str]:
    """Freeze and return the prefixes the coarse stage does not train: the part taken from the fine
    model when ``freeze_transferred``; the stem and first blocks, as in the fine model, when nothing
    is transferred; else nothing."""
    if cut == "none":
        return freeze_first_blocks(coarse, cfg.freeze_blocks)
    frozen = transferred_prefixes(coarse, cut) if cfg.freeze_transferred else []
    freeze_prefixes(coarse, frozen)
    return frozen


def fine_models(run: Run) -> tuple[list[Classifier], list[dict]]:
    """The fine models: those re-used from ``fine_from``, then the others trained. Member 0 trains as
    in a one-model run; members 1.. get their own seed (head, order, augmentation)."""
    cfg, D = run.cfg, run.data
    n_members = max(1, int(cfg.fine_models))
    fines, infos = _reuse_fine_models(run, n_members) if cfg.fine_from else ([], [])
    reused = len(fines)
    coarse_rng = None
    for k in range(reused, n_members):
        mcfg = member_config(cfg, k)
        if k > 0:
            torch.manual_seed(mcfg.seed)
        m = build_model(cfg, len(run.tax.sub_classes))
        frozen_fine = freeze_first_blocks(m, cfg.freeze_blocks)
        info = fit(
            m,
            D["images"],
            D["y_sub"],
            run.tr,
            mcfg,
            "fine",
            run.fine_epochs,
            run.work / (Path(art.fine_file(k)).stem + ".ckpt"),
            frozen_fine,
            member_progress(run.progress, k, n_members),
            run.should_stop,
        )
        info["seed"] = mcfg.seed
        info["class_balance"] = mcfg.class_balance
        fines.append(m)
        infos.append(info)
        if k == 0:
            coarse_rng = torch.get_rng_state()  # the coarse model starts as in a one-model run
    if coarse_rng is not None:
        torch.set_rng_state(coarse_rng)
    run.timings["fine"] = sum(i["seconds"] for i in infos[reused:])
    run.timings["fine_members"] = [i.get("seconds") for i in infos]
    return fines, infos


def _reuse_fine_models(run: Run, n_members: int) -> tuple[list[Classifier], list[dict]]:
    """The fine models of the ``fine_from`` artefact, refused unless it was trained on the same data,
    taxonomy, backbone, size, colour constancy, split and class balance."""
    cfg, tax, D = run.cfg, run.tax, run.data
    src = art.read_manifest(cfg.fine_from)
    src_tax = Taxonomy.from_json(Path(cfg.fine_from) / "taxonomy.json")
    if (
        src["data"]["fingerprint"] != D["fingerprint"]
        or src_tax.sub_classes != tax.sub_classes
        or src["backbone"] != cfg.backbone
        or src["preprocessing"]["size"] != cfg.image_size
        or src["preprocessing"].get("colour_constancy", "none") != cfg.colour_constancy
    ):
        raise ArtefactError(
            "fine_from: the artefact was trained on other data, taxonomy, backbone, size or colour constancy"
        )
    _, te_src = split_by_cases(D["records"], set(src["split"]["test_cases"]))
    if not np.array_equal(te_src, run.te):
        raise ArtefactError("fine_from: the artefact's held-out split differs from this run's split")
    reused = min(n_members, int(src.get("fine_members", 1)))
    src_infos = src.get("fine_members_training") or [src["fine_training"]]
    fines, infos = [], []
    for k in range(reused):
        had = src_infos[k].get("class_balance")
        if had is not None and had != member_config(cfg, k).class_balance:
            raise ArtefactError(
                f"fine_from: fine model {k + 1} of the artefact was trained with class balance "
                f"{had!r}, this run asks for {member_config(cfg, k).class_balance!r}"
            )
        m = build_model(cfg, len(tax.sub_classes))
        m.load_state_dict(art.load_state(Path(cfg.fine_from) / art.fine_file(k)))
        m.eval()
        fines.append(m)
        infos.append({**src_infos[k], "reused_from_artefact_created": src.get("created")})
    run.timings["fine_reused_seconds"] = sum(i.get("seconds", 0.0) for i in src_infos[:reused])
    return fines, infos


def coarse_model(run: Run, fine: Classifier) -> tuple[Classifier, dict]:
    """The coarse model: blocks up to the cut taken from ``fine``, trained at image_size with the
    coarse class balance on every epoch."""
    cfg, D = run.cfg, run.data
    t0 = time.time()
    coarse = build_model(cfg, len(run.tax.meta_classes))
    cut = parse_cut(cfg.transfer_cut, coarse)
    copied = transfer_cut(coarse, fine, cut)
    frozen = coarse_frozen(cfg, coarse, cut)
    ccfg = replace(cfg, progressive_size=None, reweight_from=0.0)
    if cfg.coarse_class_balance is not None:
        ccfg = replace(ccfg, class_balance=cfg.coarse_class_balance)
    info = fit(
        coarse,
        D["images"],
        D["y_meta"],
        run.tr,
        ccfg,
        "coarse",
        run.coarse_epochs,
        run.work / "coarse.ckpt",
        frozen,
        run.progress,
        run.should_stop,
        groups=D["y_sub"],
    )
    info["transferred_tensors"] = len(copied)
    info["cut"] = cut
    run.timings["coarse"] = time.time() - t0
    return coarse, info


def binary_model(run: Run) -> tuple[Classifier | None, dict | None]:
    """The single-stage baseline of the binary question (``positive``), when asked for."""
    cfg, D = run.cfg, run.data
    if not (cfg.positive and cfg.binary_epochs > 0):
        return None, None
    t0 = time.time()
    binary = build_model(cfg, 2)
    yb = np.isin(np.array(run.tax.sub_classes)[D["y_sub"]], cfg.positive).astype(np.int64)
    frozen = freeze_first_blocks(binary, cfg.freeze_blocks)
    info = fit(
        binary,
        D["images"],
        yb,
        run.tr,
        cfg,
        "binary",
        cfg.binary_epochs,
        run.work / "binary.ckpt",
        frozen,
        run.progress,
        run.should_stop,
    )
    run.timings["binary"] = time.time() - t0
    return binary, info


def evaluate_models(run: Run, fines: list[Classifier], coarse: Classifier, binary: Classifier | None) -> dict:
    """From training photos: the OOD statistics, the opt-in int8 calibration and the metadata model;
    on the held-out photos: the metrics (None without held-out photos)."""
    cfg, D, pre = run.cfg, run.data, preprocessing_for(run.cfg)
    t0 = time.time()
    emit(run.progress, stage="evaluate", event="start")
    ood_idx = subsample(run.tr, D["y_sub"], 2000, cfg.seed)
    _, ftr = model_outputs(
        fines[0],
        subset(D["images"], ood_idx),
        pre["mean"],
        pre["std"],
        cfg.eval_batch_size,
        tta=False,
        want_features=True,
    )
    ood_means, ood_thr = ood_fit(ftr, D["y_sub"][ood_idx], len(run.tax.sub_classes), cfg.ood_quantile)
    calib, cal_n = None, 0
    if cfg.int8_calibration_images > 0:  # activation ranges for int8 serving, from training images only
        tq = time.time()
        cal_idx = subsample(run.tr, D["y_sub"], cfg.int8_calibration_images, cfg.seed)
        calib = quantize.calibrate_models(
            [_on_cpu(m) for m in fines],
            _on_cpu(coarse),
            subset(D["images"], cal_idx),
            pre["mean"],
            pre["std"],
            cfg.image_size,
        )
        cal_n = len(cal_idx)
        run.timings["int8_calibration"] = time.time() - tq
    meta_models = None
    if cfg.metadata:  # age, sex, body site: counted on the training split only
        meta_models = fit_levels(
            [D["records"][i].meta for i in run.tr], D["y_sub"][run.tr], run.tax, cfg.metadata_alpha, cfg.metadata_weight
        )
    metrics = _held_out_metrics(run, fines, coarse, binary, meta_models) if len(run.te) else None
    run.timings["evaluate"] = time.time() - t0
    return {
        "ood_means": ood_means,
        "ood_threshold": ood_thr,
        "int8": calib,
        "int8_images": cal_n,
        "metadata": meta_models,
        "metrics": metrics,
    }


def _on_cpu(model: Classifier) -> Classifier:
    """The model itself on the CPU, else a CPU copy (int8 calibration runs on the CPU only)."""
    import copy

    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


def _held_out_metrics(run: Run, fines, coarse, binary, meta_models) -> dict:
    """The evaluation report of the held-out photos: the fine models' mean, the coarse and binary models."""
    check_stop(run.should_stop)
    cfg, D, te, pre = run.cfg, run.data, run.te, preprocessing_for(run.cfg)
    ti = time.time()
    ximg = subset(D["images"], te)  # read batch by batch from a disk cache

    def outputs(m):
        return model_outputs(m, ximg, pre["mean"], pre["std"], cfg.eval_batch_size, cfg.tta)

    pf = np.mean([outputs(m) for m in fines], axis=0)
    pc = outputs(coarse)
    pb = outputs(binary)[:, 1] if binary is not None else None
    t_inf = time.time() - ti
    metrics = report_from_probs(pf, pc, D["y_sub"][te], run.tax, positive=cfg.positive, p_binary=pb)
    if meta_models is not None:
        metrics["with_metadata"] = metadata_report(
            pf, pc, D["y_sub"][te], run.tax, *meta_models, [D["records"][i].meta for i in te]
        )
    metrics["inference_images_per_second_fine_plus_coarse"] = len(te) / t_inf
    return metrics
