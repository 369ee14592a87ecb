"""Fit an artefact's triage: calibration, tier thresholds, the unfamiliar-photo detector (``triage.py``).

    fit_triage(model_dir, data_dir, modality=None, targets=None, progress=None) -> dict (triage.json)

Works on an existing artefact and its training data (same fingerprint as the manifest's): the
photos of the manifest's held-out split (``split.test_cases``) are run as the portal serves them
(``Predictor.probabilities``) for the temperature, ECE before and after, the tier thresholds and
the detector's threshold (with each photo's age, sex and site where the artefact has a metadata
model, as the portal serves); training-split photos (at most ``max_train_photos``, stratified) give the
detector's statistics. Writes ``triage_ood.safetensors``, ``heldout.safetensors`` and, last,
``triage.json`` (each atomically). Also ``python -m inference.ml calibrate``.

Modality: ``modality`` if given; else a ``modality`` column of labels.csv (every value found is
accepted at prediction time; a given ``modality`` must be one of them); else "dermoscopic".
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from . import artefact as art
from . import calibration as cal
from . import triage as tri
from .taxonomy import fuse


def _emit(progress, message):
    if progress is not None:
        progress({"stage": "triage", "message": message})


def resolve_modalities(records, modality: str | None) -> tuple[list[str], str]:
    """(accepted modalities, most common first; where they came from)."""
    col = Counter(
        tri.normalise_modality(r.meta.get("modality")) for r in records if str(r.meta.get("modality") or "").strip()
    )
    given = tri.normalise_modality(modality) if modality else None
    if col:
        found = [m for m, _ in col.most_common()]
        if given is not None and given not in found:
            raise ValueError(f"modality {given!r} disagrees with the data's modality column ({', '.join(found)})")
        return found, "modality column of the data"
    return [given or tri.DEFAULT_MODALITY], "given" if given else "default (the data has no modality column)"


def stratified_subsample(y, n: int, seed: int = 0) -> np.ndarray:
    """Indices of about ``n`` of ``y`` with each class in proportion (all when ``n >= len(y)``)."""
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(rng.permutation(idx)[: max(1, round(n * len(idx) / len(y)))])
    return np.sort(np.concatenate(keep))


def run_photos(P, records, batch_size: int = 16, chunk: int = 256, progress=None, label=""):
    """(kept indices, p_fine, p_coarse, features) of ``records`` as the predictor serves them,
    decoded ``chunk`` photos at a time; unreadable photos are left out."""
    import torch

    from .cache import build_cache

    keep, pf, pc, ft = [], [], [], []
    for s in range(0, len(records), chunk):
        images, ok, _ = build_cache(records[s : s + chunk], P.size, None, colour=P.colour)
        idx = np.flatnonzero(ok)
        images = images[torch.as_tensor(idx)]
        for b in range(0, len(images), batch_size):
            f, c, x = P.probabilities(images[b : b + batch_size])
            pf.append(f)
            pc.append(c)
            ft.append(x)
        keep.append(idx + s)
        _emit(progress, f"{label}: {min(s + chunk, len(records))}/{len(records)} photos")

    def cat(a):
        return np.concatenate(a) if a else np.zeros((0, 0), np.float32)

    return (np.concatenate(keep) if keep else np.zeros(0, int)), cat(pf), cat(pc), cat(ft)


def roc_points(prob, y, taxonomy, max_points: int = 60) -> dict:
    """Per sub-class one-vs-rest ROC of held-out probabilities: {sub: {fpr, tpr, auc}} (None without both)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    out = {}
    for j, s in enumerate(taxonomy.sub_classes):
        yy = (y == j).astype(int)
        if yy.min() == yy.max():
            out[s] = None
            continue
        fpr, tpr, _ = roc_curve(yy, prob[:, j])
        if len(fpr) > max_points:
            pick = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(int))
            fpr, tpr = fpr[pick], tpr[pick]
        out[s] = {
            "fpr": [round(float(v), 4) for v in fpr],
            "tpr": [round(float(v), 4) for v in tpr],
            "auc": float(roc_auc_score(yy, prob[:, j])),
        }
    return out


def fit_triage(
    model_dir,
    data_dir,
    modality: str | None = None,
    targets: dict | None = None,
    progress=None,
    ood_method: str = "combined",
    max_false_alarm: float = 0.05,
    max_train_photos: int = 2000,
    batch_size: int = 16,
    seed: int = 0,
    precision: str | None = None,
) -> dict:
    import torch
    from safetensors.torch import save as st_bytes

    from .data import data_fingerprint, filter_to_taxonomy, read_dataset, split_by_cases
    from .ood import FeatureOOD
    from .predict import Predictor

    model_dir = Path(model_dir)
    t0 = time.time()
    P = Predictor.load(model_dir, precision=precision)
    tax, man = P.taxonomy, P.manifest
    if tri.grade_masks(tax) is None:
        raise ValueError(f"{model_dir}: {tri.NO_GRADES}")
    tg = {**tri.DEFAULT_TARGETS, **{k: v for k, v in (targets or {}).items() if v is not None}}
    test_cases = sorted(man["split"].get("test_cases") or [])
    if not test_cases:
        raise ValueError(f"{model_dir}: the model has no held-out split; triage calibration needs its held-out cases")
    records, _ = read_dataset(data_dir)
    records, _ = filter_to_taxonomy(records, tax)
    if data_fingerprint(records) != man["data"]["fingerprint"]:
        raise ValueError(
            f"{data_dir} is not this model's training data (fingerprint differs): triage calibration "
            "needs the photos of its held-out split"
        )
    mods, mod_source = resolve_modalities(records, modality)
    tr, te = split_by_cases(records, set(test_cases))
    sub_idx = {s: i for i, s in enumerate(tax.sub_classes)}
    y_all = np.array([sub_idx[r.label] for r in records])
    # held-out photos: calibration, thresholds, detector threshold
    _emit(progress, f"held-out split: {len(te)} photos")
    k_te, pf, pc, f_te = run_photos(P, [records[i] for i in te], batch_size, progress=progress, label="held-out")
    te = te[k_te]
    y = y_all[te]
    # as the portal serves: with the patient's age, sex and site where the artefact has a metadata model
    with_meta = P.metadata_fine is not None
    photo_only = fuse(pc, pf, tax, "product")
    fused = P.fuse(pf, pc, "product", [records[i].meta for i in te])[0] if with_meta else photo_only
    logp = cal.log_probs(fused)
    T = cal.fit_temperature(logp, y)
    q = cal.apply_temperature(logp, T)
    p0 = cal.apply_temperature(logp, 1.0)
    calib = {
        "method": "temperature scaling of the product-fused log-probabilities (held-out NLL)",
        "bins": cal.ECE_BINS,
        "ece_before": cal.ece(p0, y),
        "ece_after": cal.ece(q, y),
        "nll_before": cal.nll(logp, y, 1.0),
        "nll_after": cal.nll(logp, y, T),
        "reliability_before": cal.reliability(p0, y),
        "reliability_after": cal.reliability(q, y),
    }
    chosen = tri.choose_thresholds(q, y, tax, tg["urgent"], tg["malignant"], tg["high_grade"])
    # training photos: the unfamiliar-photo detector
    tr_pick = tr[stratified_subsample(y_all[tr], max_train_photos, seed)]
    _emit(progress, f"training split: {len(tr_pick)} photos for the unfamiliar-photo detector")
    k_tr, _, _, f_tr = run_photos(P, [records[i] for i in tr_pick], batch_size, progress=progress, label="training")
    det = FeatureOOD.fit(f_tr, y_all[tr_pick[k_tr]], len(tax.sub_classes), ood_method, seed)
    comps = det.component_scores(f_te)
    det.set_threshold(comps, max_false_alarm)
    false_alarm = float(np.mean(det.score(f_te) > det.threshold))
    case_pos = {c: i for i, c in enumerate(test_cases)}
    held = {
        "log_fused": logp.astype(np.float32),
        "log_fused_photo": cal.log_probs(photo_only).astype(np.float32),
        "p_fine": pf.astype(np.float32),
        "p_coarse": pc.astype(np.float32),
        "labels": y.astype(np.int64),
        "case": np.array([case_pos[records[i].case_id] for i in te], np.int64),
        "ood_knn": comps["knn"].astype(np.float32),
        "ood_mahalanobis": comps["mahalanobis"].astype(np.float32),
    }
    held = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in held.items()}
    cfg = {
        "format_version": 1,
        "modality": mods[0],
        "modalities": mods,
        "modality_source": mod_source,
        "temperature": T,
        "calibration": calib,
        "with_metadata": with_meta,
        "targets": chosen["targets"],
        "thresholds": chosen["thresholds"],
        "heldout": {k: chosen[k] for k in (*tri.TARGET_KEYS, "grade3_routine_share", "tier_by_grade", "n")},
        "tiers": {
            "urgent": [s for s in tax.sub_classes if tax.grade(s) >= 3],
            "refer": [s for s in tax.sub_classes if tax.grade(s) >= 2],
            "rule": "urgent if the grade-3 sub-classes' calibrated probabilities sum to the urgent threshold "
            "or the top-1 is grade 3; else refer if the grade >= 2 sum reaches the malignant threshold "
            "or the top-1 is grade 2; else routine; the malignant threshold meets both the malignant and the "
            "high-grade (grade 3 kept out of routine) targets",
        },
        "roc": roc_points(q, y, tax),
        "ood": {**det.describe(), "file": tri.OOD_FILE, "heldout_false_alarm": false_alarm},
        "source": {
            "heldout_photos": len(te),
            "heldout_cases": len(test_cases),
            "train_photos_for_ood": len(k_tr),
            "precision": P.precision,
            "views": P.views,
            "data_fingerprint": man["data"]["fingerprint"],
        },
        "files": {"heldout": tri.HELDOUT_FILE, "ood": tri.OOD_FILE},
        "seconds": None,
        "code_version": art.code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    state = det.state()
    art.write_atomic(model_dir / tri.OOD_FILE, lambda f: f.write(st_bytes(state)))
    art.write_atomic(model_dir / tri.HELDOUT_FILE, lambda f: f.write(st_bytes(held)))
    cfg["seconds"] = time.time() - t0
    art.write_json(model_dir / tri.FILE, cfg)  # last: its presence marks a complete calibration
    _emit(progress, f"triage calibration written ({cfg['seconds']:.0f} s)")
    return cfg
