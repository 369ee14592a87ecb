"""What the model page shows of an artefact's triage calibration (triage.json): tier thresholds with
their held-out sensitivity and specificity (the artefact's and this site's), calibration error before
and after temperature scaling, a reliability diagram and per-class ROC curves (plotly figure dicts)."""

from __future__ import annotations

from . import loader
from .models import TriageSetting
from .tiers import targets_in

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


def triage_config(model_version) -> dict | None:
    """The artefact's triage.json (None when missing or the artefact is not on this server)."""
    from inference.ml.triage import read_config

    try:
        return read_config(loader.artefact_dir(model_version))
    except (OSError, ValueError):
        return None


def _rows(block: dict, thresholds: dict) -> list[dict]:
    out = []
    for key, label, _long, rule in targets_in(block):
        b = block.get(key) or {}
        out.append(
            {
                "key": key,
                "label": label,
                "rule": rule,
                "threshold": thresholds.get(key, b.get("threshold")),
                "target": b.get("target_sensitivity"),
                "sensitivity": b.get("sensitivity"),
                "specificity": b.get("specificity"),
                "n_pos": b.get("n_pos"),
                "n_neg": b.get("n_neg"),
            }
        )
    return out


def reliability_figure(cal: dict) -> dict | None:
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Perfect calibration",
            "x": [0, 1],
            "y": [0, 1],
            "line": {"dash": "dash", "color": "#888"},
            "hoverinfo": "skip",
        }
    ]
    for key, name, colour in (
        ("reliability_before", "Before (uncalibrated)", "#d62728"),
        ("reliability_after", "After temperature scaling", "#1f77b4"),
    ):
        bins = [b for b in cal.get(key) or [] if b.get("count")]
        if not bins:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "line": {"color": colour},
                "x": [b["confidence"] for b in bins],
                "y": [b["accuracy"] for b in bins],
                "customdata": [b["count"] for b in bins],
                "hovertemplate": "confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} photos<extra>"
                + name
                + "</extra>",
            }
        )
    if len(traces) == 1:
        return None
    return {
        "data": traces,
        "layout": {
            "title": {"text": "Reliability diagram, held-out photos (top-1)"},
            "height": 420,
            "xaxis": {"title": {"text": "Mean top-1 probability (confidence) in the bin"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "Share correct (accuracy) in the bin"}, "range": [0, 1]},
            "legend": {"orientation": "h", "y": -0.22},
            "margin": {"t": 50, "b": 110},
        },
    }


def roc_figure(roc: dict, names: dict) -> dict | None:
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Chance",
            "x": [0, 1],
            "y": [0, 1],
            "line": {"dash": "dash", "color": "#888"},
            "hoverinfo": "skip",
        }
    ]
    for i, (code, r) in enumerate((roc or {}).items()):
        if not r:
            continue
        label = f"{names.get(code, code)} (AUC {r['auc']:.3f})"
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": label,
                "x": r["fpr"],
                "y": r["tpr"],
                "line": {"color": COLOURS[i % len(COLOURS)]},
                "hovertemplate": "FPR %{x:.3f}<br>TPR %{y:.3f}<extra>" + label + "</extra>",
            }
        )
    if len(traces) == 1:
        return None
    return {
        "data": traces,
        "layout": {
            "title": {"text": "Per-class ROC curves, held-out photos (calibrated, one-vs-rest)"},
            "height": 460,
            "xaxis": {"title": {"text": "False positive rate (1 - specificity)"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "True positive rate (sensitivity)"}, "range": [0, 1]},
            "legend": {"orientation": "v", "x": 1.02, "y": 1},
            "margin": {"t": 50, "r": 10},
        },
    }


def model_triage_view(model_version) -> dict:
    """Context of the model page's triage section (``templates/inference/_triage_model.html``)."""
    from annotation.models import SubClass

    cfg = triage_config(model_version)
    if cfg is None:
        return {"available": False}
    setting = TriageSetting.objects.filter(model_version=model_version).select_related("updated_by").first()
    names = dict(SubClass.objects.filter(taxonomy_id=model_version.taxonomy_id).values_list("code", "display_name"))
    cal = cfg.get("calibration") or {}
    figs = {
        k: f
        for k, f in (("triage_reliability", reliability_figure(cal)), ("triage_roc", roc_figure(cfg.get("roc"), names)))
        if f
    }
    held = cfg.get("heldout") or {}
    ood = cfg.get("ood") or {}
    return {
        "available": True,
        "modality": cfg.get("modality"),
        "modalities": cfg.get("modalities") or [],
        "temperature": cfg.get("temperature"),
        "calibration": cal,
        "n_heldout": held.get("n"),
        "grade3_routine_share": held.get("grade3_routine_share"),
        "artefact_rows": _rows(held, cfg.get("thresholds") or {}),
        "targets": cfg.get("targets") or {},
        "setting": setting,
        "site_rows": _rows(setting.result, setting.thresholds) if setting else None,
        "site_grade3_routine_share": (setting.result or {}).get("grade3_routine_share") if setting else None,
        "ood": {
            "method": ood.get("method"),
            "threshold": ood.get("threshold"),
            "false_alarm": ood.get("heldout_false_alarm"),
        }
        if ood
        else None,
        "figures": figs,
    }


def has_triage_roc(model_version) -> bool:
    cfg = triage_config(model_version)
    return bool(cfg and any((cfg.get("roc") or {}).values()))
