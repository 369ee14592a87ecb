"""Turn Prediction rows into what the case page and the JSON endpoints show (no business logic)."""

from __future__ import annotations

from django.urls import reverse

from annotation.models import MalignancyGrade
from annotation.selectors import meta_classes_shared, sub_classes_shared

from .models import PredictionStatus
from .selectors import overlay_box_masses, photo_boxes
from .services.predictions import CLOSE_MARGIN
from .tiers import abstain_reason, tier_info


def warning_rule(model_version=None) -> str:
    """The rule behind the case page's warning, with the model's own out-of-distribution quantile."""
    q = ((getattr(model_version, "manifest", None) or {}).get("ood") or {}).get("quantile", 0.99)
    return (
        "A warning is shown when the photo looks unlike the training photos (its out-of-distribution score is above "
        f"the {q * 100:.0f}th percentile of the training photos' scores) or when the top two diagnoses are less than "
        f"{CLOSE_MARGIN * 100:.0f} percentage points apart."
    )


WARNING_RULE = warning_rule()


def _names(taxonomy_id: int):
    subs = {s.code: s for s in sub_classes_shared(taxonomy_id)}
    metas = {m.code: m for m in meta_classes_shared(taxonomy_id)}
    return subs, metas


def prediction_signature(pred) -> str:
    """Changes whenever what the panel shows for this prediction changes (cheap: polled)."""
    return f"{pred.pk}:{pred.status}:{pred.finished_at.timestamp() if pred.finished_at else 0}"


def prediction_view(pred) -> dict:
    """Everything the case panel and the JSON API show for one prediction."""
    if pred is None:
        return {"status": "none"}
    mv = pred.model_version
    d = {
        "id": pred.pk,
        "photo": pred.photo_id,
        "status": pred.status,
        "model_version": {"id": mv.pk, "name": mv.name, "status": mv.status, "has_metadata": mv.has_metadata},
        "created_at": pred.created_at.isoformat() if pred.created_at else None,
        "finished_at": pred.finished_at.isoformat() if pred.finished_at else None,
        "duration_ms": pred.duration_ms,
        "error": pred.error,
        "signature": prediction_signature(pred),
    }
    if pred.status != PredictionStatus.DONE:
        return d
    subs, metas = _names(mv.taxonomy_id)
    ranked = []
    for i, r in enumerate(pred.ranked):
        s = subs.get(r["sub_class"])
        ranked.append(
            {
                **r,
                "rank": i + 1,
                "display_name": s.display_name if s else r["sub_class"],
                "percent": round(100 * r["probability"], 1),
            }
        )
    groups = []
    for code, p in sorted(pred.meta_probabilities.items(), key=lambda kv: -kv[1]):
        m = metas.get(code)
        items = [r for r in ranked if r["meta_class"] == code]
        groups.append(
            {
                "code": code,
                "display_name": m.display_name if m else code,
                "probability": p,
                "percent": round(100 * p, 1),
                "fused_percent": round(100 * sum(r["probability"] for r in items), 1),
                "items": items,
            }
        )
    overlays = []
    masses = overlay_box_masses(prediction=pred)
    for ov in sorted(pred.overlays.all(), key=lambda o: (o.target_kind != "sub", o.rank)):
        if ov.target_kind == "sub":
            s = subs.get(ov.target)
            label = f"#{ov.rank + 1} {s.display_name if s else ov.target}"
        else:
            m = metas.get(ov.target)
            label = f"Meta-class: {m.display_name if m else ov.target}"
        overlays.append(
            {
                "id": ov.pk,
                "kind": ov.target_kind,
                "target": ov.target,
                "rank": ov.rank,
                "label": label,
                "url": reverse("inference:overlay_image", args=[ov.pk]),
                "box_mass": masses.get(ov.pk),
                "box_mass_percent": None if masses.get(ov.pk) is None else round(100 * masses[ov.pk]),
            }
        )
    grade = pred.malignancy_grade
    photo = pred.photo
    boxes = (
        [
            {
                "left": 100 * x0 / photo.width,
                "top": 100 * y0 / photo.height,
                "width": 100 * (x1 - x0) / photo.width,
                "height": 100 * (y1 - y0) / photo.height,
            }
            for x0, y0, x1, y1 in photo_boxes(photo)
        ]
        if masses and any(v is not None for v in masses.values())
        else []
    )
    d.update(
        {
            "boxes": boxes,
            "ranked": ranked,
            "top": ranked[0] if ranked else None,
            "meta_groups": groups,
            "meta_probabilities": pred.meta_probabilities,
            "malignancy_score": pred.malignancy_score,
            "malignancy_grade": grade,
            "malignancy_label": MalignancyGrade(grade).label if grade else None,
            "triage": triage_view(pred),
            "margin": pred.margin,
            "close_call": pred.margin is not None and len(ranked) > 1 and pred.margin < CLOSE_MARGIN,
            "ood_score": pred.ood_score,
            "looks_unfamiliar": pred.looks_unfamiliar,
            "metadata_used": pred.metadata_used,
            "metadata_labels": metadata_labels(pred.metadata_used),
            "warning": pred.warning,
            "overlays": overlays,
            "box_mass": {o["target"]: o["box_mass"] for o in overlays if o["box_mass"] is not None} or None,
        }
    )
    return d


def triage_view(pred) -> dict:
    """The tier with its plain advice, or (the model abstains) no tier, no advice and the reason."""
    info = tier_info(pred.tier)

    def pct(v):
        return None if v is None else round(100 * v, 1)

    return {
        "tier": pred.tier or None,
        "label": info.get("label"),
        "summary": info.get("summary", ""),
        "advice": info.get("advice", ""),
        "reason": pred.triage_reason if pred.tier else abstain_reason(pred),
        "abstain": pred.abstain or None,
        "calibrated": pred.calibrated,
        "urgent_probability": pred.urgent_probability,
        "malignant_probability": pred.malignant_probability,
        "urgent_percent": pct(pred.urgent_probability),
        "malignant_percent": pct(pred.malignant_probability),
        "thresholds": pred.triage_thresholds or {},
        "urgent_threshold_percent": pct((pred.triage_thresholds or {}).get("urgent")),
        "malignant_threshold_percent": pct((pred.triage_thresholds or {}).get("malignant")),
        "unfamiliar_score": pred.unfamiliar_score,
    }


def metadata_labels(used: dict | None) -> list[str]:
    """Readable chips for the patient metadata a prediction took: "age 40-49", "female", "site: trunk"."""
    from inference.ml.metadata import AGE_MAX_BIN

    out = []
    for k, v in (used or {}).items():
        if k == "age":
            out.append(f"age {AGE_MAX_BIN * 10}+" if int(v) >= AGE_MAX_BIN else f"age {int(v) * 10}-{int(v) * 10 + 9}")
        elif k == "sex":
            out.append(str(v))
        else:
            out.append(f"{k}: {v}")
    return out


# --------------------------------------------------------------------------- model registry pages
def camera_augmentation(training: dict) -> str:
    """How training simulated other cameras and lights ("" when off or not recorded, as in older artefacts)."""
    aug = training.get("augmentation") or {}
    parts = [
        text.format(aug[k])
        for k, text in (
            ("blur", "blur up to {:g} px"),
            ("noise", "noise up to {:g}"),
            ("jpeg", "JPEG down to quality {:g}"),
            ("channel_gain", "light colour ±{:g}"),
            ("gamma", "tone curve ±{:g}"),
        )
        if aug.get(k)
    ]
    share = aug.get("optics_p", 1)
    if share < 1 and any(aug.get(k) for k in ("blur", "noise", "jpeg")):
        parts.append(f"optics on {share:.0%} of the photos")
    return ", ".join(parts)


def head_start(man: dict) -> str:
    """How the new heads started ("" for random heads and older artefacts): the linear probe's L2
    strength per stage, chosen on held-out training photos."""
    probes = [(name, (man.get(f"{name}_training") or {}).get("head_probe")) for name in ("fine", "coarse")]
    said = [f"{name} C {p['C']:g}" for name, p in probes if p]
    return f"heads started as linear probes (LP-FT; {', '.join(said)})" if said else ""


def manifest_view(model_version) -> dict:
    """What the model page shows of the artefact's manifest."""
    man = model_version.manifest or {}
    training = man.get("training") or {}
    pre = man.get("preprocessing") or {}
    return {
        "backbone": man.get("backbone"),
        "image_size": pre.get("size"),
        "colour_constancy": pre.get("colour_constancy", "none").replace("_", " "),
        "transfer_cut": man.get("transfer_cut"),
        "data": man.get("data") or {},
        "created": man.get("created"),
        "training": training,
        "timings": man.get("timings_seconds") or {},
        "camera_augmentation": camera_augmentation(training),
        "head_start": head_start(man),
        "progressive": (man.get("fine_training") or {}).get("progressive"),
    }


# --------------------------------------------------------------------------- training pages
def training_form_defaults(settings_shown) -> dict:
    """The engine's defaults of the training form's ``settings_shown`` (TrainConfig fields), with the
    rules the engine applies when a setting is left empty."""
    from dataclasses import fields

    from inference.ml.budget import AUTO_IMAGE_SIZE_RULE
    from inference.ml.data import AugmentConfig
    from inference.ml.train import AUTO_EPOCHS_RULE, TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig) if f.name in settings_shown}
    d["epochs"] = AUTO_EPOCHS_RULE  # shown, not posted
    d["image_size"] = AUTO_IMAGE_SIZE_RULE  # shown, not posted
    d["colour_constancy"] = d["colour_constancy"].replace("_", " ")  # shown, not posted
    d["cameras"] = camera_augmentation({"augmentation": AugmentConfig().to_dict()}) or "off"
    return d


def training_state(run) -> dict:
    """A training run's state for its page and the polled JSON."""
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "progress": run.progress,
        "cancel_requested": run.cancel_requested,
        "finished": run.is_finished,
        "error": run.error,
        "n_cases": run.n_cases,
        "n_photos": run.n_photos,
        "log": run.log[-4000:],
        "model_version": run.model_version_id,
        "model_url": reverse("inference:model_detail", args=[run.model_version_id]) if run.model_version_id else None,
    }
