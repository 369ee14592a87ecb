"""What an admin sees before activating a model: the candidate's held-out numbers beside the active
model's, and the checks it fails (below a tier's target sensitivity, no triage calibration, too few
training photos of a class). A model failing a check is activated only with a written reason
(``services.model_activate``). Reads only: the registered metrics, manifest and the artefact's triage.json."""

from __future__ import annotations

import json

from django.conf import settings

from . import charts, loader
from .models import ModelVersion
from .tiers import TARGETS, targets_in

# Fewer training photos than this of any sub-class needs a written reason to activate (and warns at training).
MIN_CLASS_PHOTOS = int(getattr(settings, "DERM_MIN_CLASS_PHOTOS", 20))


def model_triage(model_version: ModelVersion) -> dict | None:
    """The artefact's triage.json (None when the artefact has none or it cannot be read)."""
    if not loader.artefact_present(model_version):
        return None
    path = loader.artefact_dir(model_version) / "triage.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def class_counts(model_version: ModelVersion) -> dict[str, int] | None:
    counts = ((model_version.manifest or {}).get("data") or {}).get("class_counts")
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else None


def small_classes(counts: dict[str, int] | None, minimum: int = MIN_CLASS_PHOTOS) -> list[tuple[str, int]]:
    return sorted(((c, n) for c, n in (counts or {}).items() if n < minimum), key=lambda x: (x[1], x[0]))


def tier_rows(triage: dict | None) -> list[dict]:
    """Per tier: held-out sensitivity / specificity, the target and whether it is met."""
    rows = []
    heldout = (triage or {}).get("heldout") or {}
    for key, _short, label, _rule in targets_in(heldout):
        h = heldout.get(key) or {}
        sens, target = h.get("sensitivity"), h.get("target_sensitivity")
        rows.append(
            {
                "key": key,
                "label": label,
                "sensitivity": sens,
                "specificity": h.get("specificity"),
                "target": target,
                "n_pos": h.get("n_pos"),
                "n_neg": h.get("n_neg"),
                "meets": None if sens is None or target is None else sens >= target,
            }
        )
    return rows


def activation_concerns(model_version: ModelVersion) -> list[str]:
    """The checks ``model_version`` fails, in plain words (empty: it may be activated without a reason)."""
    out = []
    triage = model_triage(model_version)
    if triage is None:
        out.append("No triage calibration (triage.json): the model cannot give urgency tiers.")
    else:
        for r in tier_rows(triage):
            if r["sensitivity"] is None:
                out.append(f"{r['label']}: no held-out sensitivity recorded.")
            elif r["meets"] is False:
                out.append(
                    f"{r['label']}: held-out sensitivity {r['sensitivity']:.3f} is below the target {r['target']:.2f}."
                )
    counts = class_counts(model_version)
    if counts is None:
        out.append("The manifest does not say how many photos of each class the model was trained on.")
    else:
        small = small_classes(counts)
        if small:
            out.append(
                f"Trained on fewer than {MIN_CLASS_PHOTOS} photos of " + ", ".join(f"{c} ({n})" for c, n in small) + "."
            )
    return out


def _side(model_version: ModelVersion | None) -> dict | None:
    if model_version is None:
        return None
    triage = model_triage(model_version)
    return {
        "m": model_version,
        "summary": charts.metrics_summary(model_version.metrics),
        "tiers": tier_rows(triage),
        "has_triage": triage is not None,
        "small_classes": small_classes(class_counts(model_version)),
    }


def activation_review(model_version: ModelVersion) -> dict:
    """Candidate and active model side by side, and the candidate's concerns."""
    active = (
        ModelVersion.objects.filter(taxonomy_id=model_version.taxonomy_id, status="active")
        .exclude(pk=model_version.pk)
        .first()
    )
    concerns = activation_concerns(model_version)
    cand, act = _side(model_version), _side(active)
    rows = []
    for key, label, fmt in (
        ("n", "Held-out test photos", "int"),
        ("accuracy", "Accuracy (hierarchy, product)", "f"),
        ("macro_f1", "Macro F1", "f"),
        ("macro_auc", "Macro AUC", "f"),
        ("coarse_accuracy", "Meta-class accuracy", "f"),
    ):
        rows.append(
            {
                "label": label,
                "candidate": cand["summary"].get(key),
                "active": act["summary"].get(key) if act else None,
                "int": fmt == "int",
            }
        )
    cand_tiers = {r["key"]: r for r in cand["tiers"]}
    act_tiers = {r["key"]: r for r in act["tiers"]} if act else {}
    for key, _short, label, _rule in TARGETS:
        if key not in cand_tiers and key not in act_tiers:
            continue
        for stat in ("sensitivity", "specificity"):
            c = cand_tiers.get(key, {})
            a = act_tiers.get(key, {})
            rows.append(
                {
                    "label": f"{label}: {stat}",
                    "candidate": c.get(stat),
                    "active": a.get(stat),
                    "target": c.get("target") if stat == "sensitivity" else None,
                    "below": stat == "sensitivity" and c.get("meets") is False,
                    "int": False,
                }
            )
    return {
        "candidate": cand,
        "active": act,
        "rows": rows,
        "concerns": concerns,
        "needs_reason": bool(concerns),
        "min_class_photos": MIN_CLASS_PHOTOS,
    }
