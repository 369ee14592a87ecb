"""Serving one photo: its ranked differential and Grad-CAM overlays as plain data (no Django, no database).

Public API:
- ``ranked_rows(differential) -> list[dict]``: the ranked sub-classes of a ``Differential`` as
  ``{"sub_class", "meta_class", "probability", "fine_probability"}`` dicts, most likely first.
- ``prediction_compute(*, predictor, image, photo_size, boxes=(), metadata=None, modality=None,
  thresholds=None) -> dict``: the differential, malignancy, urgency tier ("triage", ``triage.py``'s
  block), out-of-distribution score and overlay PNGs of one PIL image.
"""

from __future__ import annotations

import io
import logging
import threading
import time

import numpy as np

from .explain import downsample, explain, heatmap_mass_in_boxes, render_overlay, shared_scale

log = logging.getLogger(__name__)

GRADCAM_TOP_SUB = 3  # overlays for the top three sub-classes (plus the top meta-class)
# Grad-CAM hooks live on the shared (cached) model: one photo at a time per process
# (matters only with threads, e.g. eager jobs in a threaded dev server)
_CAM_LOCK = threading.Lock()
RANKED_KEYS = ("sub_class", "meta_class", "probability", "fine_probability")


def ranked_rows(differential) -> list[dict]:
    """The ranked sub-classes of ``differential`` (``Predictor.predict``), most likely first."""
    return [{k: r[k] for k in RANKED_KEYS} for r in differential.to_dict()["ranked"]]


def _overlays(predictor, image, ranked: list[dict], metas: list, photo_size, boxes) -> list[dict]:
    """One overlay per explained class: PNG bytes at the photo's size, the shared colour scale,
    the share of heat inside ``boxes`` and a 32x32 heat map for later box masses."""
    with _CAM_LOCK:
        maps = explain(
            predictor, image, [r["sub_class"] for r in ranked[:GRADCAM_TOP_SUB]], [metas[0][0]] if metas else []
        )
    vmax = shared_scale(maps)
    out = []
    for m in maps:
        buf = io.BytesIO()
        render_overlay(m.cam, vmax, photo_size).save(buf, "PNG", optimize=False, compress_level=3)
        out.append(
            {
                "kind": m.kind,
                "target": m.target,
                "rank": m.rank,
                "png": buf.getvalue(),
                "scale_max": vmax,
                "box_mass": heatmap_mass_in_boxes(m.cam, boxes, photo_size) if boxes else None,
                "heatmap": np.round(downsample(m.cam / vmax), 4).tolist(),
            }
        )
    return out


def prediction_compute(
    *,
    predictor,
    image,
    photo_size,
    boxes=(),
    metadata: dict | None = None,
    modality: str | None = None,
    thresholds: dict | None = None,
) -> dict:
    """Differential + Grad-CAM overlay PNGs of one PIL ``image`` shown at ``photo_size`` (width, height).
    ``boxes``: annotator boxes in photo pixels; ``metadata`` (age, sex, site) enters where the artefact
    has a metadata model (``Predictor.fuse``); ``modality`` (the photo's) and ``thresholds`` (the site's
    tier thresholds, None: the artefact's) set the tier or the abstention. A Grad-CAM failure leaves the
    differential and says so in ``cam_error``."""
    t0 = time.perf_counter()
    diff = predictor.predict_one(image, metadata=metadata, modality=modality, thresholds=thresholds)
    d = diff.to_dict()
    ranked = ranked_rows(diff)
    metas = sorted(d["meta_probabilities"].items(), key=lambda kv: -kv[1])
    t1 = time.perf_counter()
    overlays, cam_error = [], ""
    try:
        overlays = _overlays(predictor, image, ranked, metas, photo_size, boxes)
    except Exception as exc:  # heat maps are an aid: their failure must not hide the differential
        log.exception("Grad-CAM failed")
        cam_error = f"Heat maps unavailable: {exc}"
    return {
        "ranked": ranked,
        "meta_probabilities": d["meta_probabilities"],
        "fused_method": d["fused_method"],
        "malignancy_score": d["malignancy_score"],
        "malignancy_grade": d["malignancy_grade"],
        "margin": d["margin"],
        "ood_score": d["ood_score"],
        "looks_unfamiliar": bool(d["looks_unfamiliar"]),
        "triage": d["triage"],
        "calibrated": bool(d["calibrated"]),
        "metadata_used": d["extra"].get("metadata_used") or {},
        "overlays": overlays,
        "cam_error": cam_error,
        "seconds": {"predict": t1 - t0, "gradcam": time.perf_counter() - t1},
    }
