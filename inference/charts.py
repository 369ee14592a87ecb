"""Tables and plotly figures (as dicts for Plotly.newPlot) from a model's evaluation report.

The numbers come from inference.ml.evaluate (metrics.json of the artefact); nothing is
recomputed here, only arranged for display.
"""

from __future__ import annotations

FUSIONS = [
    ("flat", "Flat (fine model alone)"),
    ("hierarchical_hard", "Hierarchy, method 1 (hard gate)"),
    ("hierarchical_product", "Hierarchy, method 2 (product)"),
]
METRICS = [
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("top3_accuracy", "Top-3 accuracy"),
    ("macro_auc", "Macro AUC"),
]
COLOURS = ["#9fb4c4", "#e0a040", "#0b6e8a", "#6a3d9a"]


def _num(x):
    return x if isinstance(x, (int, float)) else None


def metrics_summary(metrics: dict) -> dict:
    prod = (metrics or {}).get("hierarchical_product") or {}
    flat = (metrics or {}).get("flat") or {}
    return {
        "n": (metrics or {}).get("n"),
        "accuracy": _num(prod.get("accuracy")),
        "macro_f1": _num(prod.get("macro_f1")),
        "macro_auc": _num(prod.get("macro_auc")),
        "flat_macro_f1": _num(flat.get("macro_f1")),
        "coarse_accuracy": _num(((metrics or {}).get("coarse") or {}).get("accuracy")),
    }


def comparison_table(metrics: dict) -> list[dict]:
    rows = []
    for key, label in FUSIONS + [
        ("coarse", "Coarse model (meta-classes)"),
        ("coarse_from_fine", "Meta-classes summed from fine"),
    ]:
        block = (metrics or {}).get(key)
        if not block:
            continue
        rows.append({"key": key, "label": label, "values": [_num(block.get(m)) for m, _ in METRICS]})
    return rows


def per_class_table(metrics: dict, key: str) -> list[dict]:
    block = (metrics or {}).get(key) or {}
    out = []
    for name, r in (block.get("per_class") or {}).items():
        out.append(
            {
                "name": name,
                "support": r.get("support"),
                "recall": _num(r.get("recall")),
                "precision": _num(r.get("precision")),
                "specificity": _num(r.get("specificity")),
                "f1": _num(r.get("f1")),
                "auc": _num(r.get("auc")),
                "ci_low": _num(r.get("ci_low")),
                "ci_high": _num(r.get("ci_high")),
            }
        )
    return out


def malignancy_table(metrics: dict) -> dict | None:
    mal = (metrics or {}).get("malignancy")
    if not mal:
        return None
    rows = []
    for g, r in sorted((mal.get("per_grade") or {}).items()):
        rows.append(
            {
                "grade": int(g),
                "auc": _num(r.get("auc")),
                "ci_low": _num(r.get("ci_low")),
                "ci_high": _num(r.get("ci_high")),
                "n_pos": r.get("n_pos"),
                "n": r.get("n"),
            }
        )
    return {
        "rows": rows,
        "accuracy": _num(mal.get("grade_accuracy")),
        "balanced_accuracy": _num(mal.get("grade_balanced_accuracy")),
        "thresholds": mal.get("thresholds", ""),
    }


def has_roc_points(metrics: dict) -> bool:
    return bool(_roc_points(metrics))


def _roc_points(metrics: dict) -> dict:
    """Per-class ROC points when the evaluation JSON carries them ({"roc": {"fpr": [], "tpr": []}}
    per class, or a top-level "roc_curves" {class: {fpr, tpr}})."""
    prod = (metrics or {}).get("hierarchical_product") or {}
    out = {}
    for name, r in (prod.get("per_class") or {}).items():
        roc = r.get("roc") if isinstance(r, dict) else None
        if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
            out[name] = roc
    for name, roc in (prod.get("roc_curves") or (metrics or {}).get("roc_curves") or {}).items():
        if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
            out.setdefault(name, roc)
    return out


def _confusion_figure(block: dict, title: str) -> dict | None:
    cm = block.get("confusion_matrix")
    pct = block.get("confusion_matrix_row_percent")
    classes = block.get("classes")
    if not cm or not classes:
        return None
    return {
        "data": [
            {
                "type": "heatmap",
                "z": pct or cm,
                "x": classes,
                "y": classes,
                "colorscale": "Blues",
                "reversescale": True,
                "zmin": 0,
                "zmax": 100 if pct else None,
                "text": [[f"{c}" for c in row] for row in cm],
                "texttemplate": "%{text}",
                "hovertemplate": "true %{y} → predicted %{x}<br>%{z:.1f}% of the true class (%{text} images)<extra></extra>",
                "colorbar": {"title": {"text": "% of true class"}},
            }
        ],
        "layout": {
            "title": {"text": title},
            "height": 420,
            "margin": {"l": 110, "r": 20, "t": 50, "b": 80},
            "xaxis": {"title": {"text": "Predicted class"}, "side": "bottom"},
            "yaxis": {"title": {"text": "True class (reference label)"}, "autorange": "reversed"},
        },
    }


def figures(metrics: dict) -> dict:
    """{id: plotly figure dict} for the model detail page."""
    figs: dict[str, dict] = {}
    if not metrics:
        return figs
    prod = metrics.get("hierarchical_product")
    if prod:
        f = _confusion_figure(prod, "Confusion matrix, sub-classes (hierarchy, product fusion); cells: counts")
        if f:
            figs["confusion"] = f
    if metrics.get("coarse"):
        f = _confusion_figure(metrics["coarse"], "Confusion matrix, meta-classes (coarse model); cells: counts")
        if f:
            figs["confusion_coarse"] = f
    bars = []
    for i, (key, label) in enumerate(FUSIONS):
        block = metrics.get(key)
        if not block:
            continue
        bars.append(
            {
                "type": "bar",
                "name": label,
                "x": [m[1] for m in METRICS],
                "y": [_num(block.get(m)) for m, _ in METRICS],
                "marker": {"color": COLOURS[i]},
                "hovertemplate": "%{x}: %{y:.3f}<extra>" + label + "</extra>",
            }
        )
    if bars:
        figs["comparison"] = {
            "data": bars,
            "layout": {
                "title": {"text": "Flat vs hierarchical fusion on the held-out cases"},
                "barmode": "group",
                "height": 380,
                "yaxis": {"title": {"text": "Score (0–1)"}, "range": [0, 1]},
                "xaxis": {"title": {"text": "Metric"}},
                "legend": {"orientation": "h", "y": -0.25},
                "margin": {"t": 50, "b": 110},
            },
        }
    if prod and prod.get("per_class"):
        names, auc, lo, hi = [], [], [], []
        for name, r in prod["per_class"].items():
            if _num(r.get("auc")) is None:
                continue
            names.append(name)
            auc.append(r["auc"])
            lo.append(r["auc"] - r["ci_low"] if _num(r.get("ci_low")) is not None else 0)
            hi.append(r["ci_high"] - r["auc"] if _num(r.get("ci_high")) is not None else 0)
        if names:
            figs["auc"] = {
                "data": [
                    {
                        "type": "bar",
                        "name": "AUC (one-vs-rest) with DeLong 95% CI",
                        "x": names,
                        "y": auc,
                        "marker": {"color": COLOURS[2]},
                        "error_y": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
                    }
                ],
                "layout": {
                    "title": {"text": "Per-class AUC (product fusion), DeLong 95% CI"},
                    "height": 360,
                    "yaxis": {"title": {"text": "AUC"}, "range": [0, 1.05]},
                    "xaxis": {"title": {"text": "Sub-class"}},
                    "showlegend": True,
                    "legend": {"orientation": "h", "y": -0.3},
                    "margin": {"t": 50, "b": 100},
                },
            }
    roc = _roc_points(metrics)
    if roc:
        data = [
            {"type": "scatter", "mode": "lines", "name": f"{name}", "x": r["fpr"], "y": r["tpr"]}
            for name, r in roc.items()
        ]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "chance",
                "x": [0, 1],
                "y": [0, 1],
                "line": {"dash": "dot", "color": "#999"},
            }
        )
        figs["roc"] = {
            "data": data,
            "layout": {
                "title": {"text": "Per-class ROC curves (one-vs-rest, product fusion)"},
                "height": 420,
                "xaxis": {"title": {"text": "False positive rate (1 − specificity)"}, "range": [0, 1]},
                "yaxis": {"title": {"text": "True positive rate (sensitivity)"}, "range": [0, 1]},
            },
        }
    return figs
