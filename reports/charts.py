"""Charts of reader-study results: plotly figure dicts for the page, matplotlib PNG/SVG for files
and the PDF. Both are drawn from the same results dict (reports.results)."""

from __future__ import annotations

import io

from .models import Experience

X_TITLE = "False positive rate (1 − specificity)"
Y_TITLE = "True positive rate (sensitivity)"
MODEL_COLOUR = "#0b6e8a"
EXPERIENCE_COLOURS = {"intern": "#9c755f", "resident": "#f28e2b", "attending": "#59a14f", "expert": "#b07aa1"}
EXPERIENCE_SYMBOLS = {"intern": "circle", "resident": "square", "attending": "diamond", "expert": "triangle-up"}
MPL_MARKERS = {"intern": "o", "resident": "s", "attending": "D", "expert": "^"}
EXPERIENCE_LABELS = dict(Experience.choices)


def model_legend(m: dict) -> str:
    if m.get("ci_low") is None:  # fewer than two positives or negatives: no interval
        return f"Model: AUC {m['auc']:.3f}"
    return f"Model: AUC {m['auc']:.3f} (95% CI {m['ci_low']:.3f}–{m['ci_high']:.3f}, DeLong)"


def _by_experience(readers: list[dict]) -> list[tuple[str, list[dict]]]:
    groups = []
    for level in Experience.values:
        rows = [r for r in readers if r["experience"] == level and r["tpr"] is not None and r["fpr"] is not None]
        if rows:
            groups.append((level, rows))
    return groups


def task_title(task: dict, binary: bool) -> str:
    if binary:
        return f"{task['label']} vs the rest (positives {task['n_pos']}, negatives {task['n_neg']})"
    return f"{task['label']}, one-vs-rest (positives {task['n_pos']}, negatives {task['n_neg']})"


# ROC points are joined by straight segments: a run of tied scores is a diagonal segment, which is
# what the Mann-Whitney AUC (ties count 1/2) integrates - a staircase would misdraw it.


def plotly_figure(task: dict, *, aided_task: dict | None = None, title: str = "") -> dict:
    """A plotly figure (as a dict for Plotly.newPlot) for one binary task."""
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": [0, 1],
            "y": [0, 1],
            "name": "Chance",
            "line": {"dash": "dot", "color": "#9aa5b1", "width": 1},
            "hoverinfo": "skip",
        }
    ]
    m = task.get("model")
    if m:
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": m["roc"]["fpr"],
                "y": m["roc"]["tpr"],
                "name": model_legend(m),
                "line": {"color": MODEL_COLOUR, "width": 2.5},
                "hovertemplate": "Model<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
            }
        )
        y = m["youden"]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [y["fpr"]],
                "y": [y["tpr"]],
                "name": f"Model Youden point (sens {y['sensitivity']:.2f}, spec {y['specificity']:.2f})",
                "marker": {"symbol": "star", "size": 16, "color": MODEL_COLOUR, "line": {"color": "#fff", "width": 1}},
                "hovertemplate": "Model Youden point<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
            }
        )
    for r in task["readers"]:
        if r.get("roc"):
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": r["roc"]["fpr"],
                    "y": r["roc"]["tpr"],
                    "name": f"{r['name']} curve: AUC {r['auc']:.3f}",
                    "legendgroup": "reader-curves",
                    "line": {"color": EXPERIENCE_COLOURS.get(r["experience"], "#888"), "width": 1},
                    "opacity": 0.55,
                    "visible": "legendonly" if len(task["readers"]) > 8 else True,
                    "hovertemplate": f"{r['name']}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
                }
            )
    for level, rows in _by_experience(task["readers"]):
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [r["fpr"] for r in rows],
                "y": [r["tpr"] for r in rows],
                "name": f"Readers: {EXPERIENCE_LABELS.get(level, level).lower()} (n={len(rows)})",
                "text": [r["name"] for r in rows],
                "marker": {
                    "symbol": EXPERIENCE_SYMBOLS.get(level, "circle"),
                    "size": 10,
                    "color": EXPERIENCE_COLOURS.get(level, "#888"),
                    "line": {"color": "#fff", "width": 1},
                },
                "hovertemplate": "%{text}<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
            }
        )
    mr = task.get("mean_reader")
    if mr:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [mr["fpr"]],
                "y": [mr["tpr"]],
                "name": f"Mean reader (FPR {mr['fpr']:.2f}, TPR {mr['tpr']:.2f}; {mr['n_readers']} {mr.get('which', 'readers')})",
                "marker": {"symbol": "x", "size": 15, "color": "#1d2733", "line": {"color": "#1d2733", "width": 2}},
                "hovertemplate": "Mean reader<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
            }
        )
    if aided_task:
        pts = [r for r in aided_task["readers"] if r["tpr"] is not None and r["fpr"] is not None]
        if pts:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": [r["fpr"] for r in pts],
                    "y": [r["tpr"] for r in pts],
                    "name": f"Readers, AI-aided (n={len(pts)})",
                    "text": [r["name"] for r in pts],
                    "marker": {"symbol": "circle-open", "size": 10, "color": "#c62828", "line": {"width": 2}},
                    "hovertemplate": "%{text} (AI-aided)<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
                }
            )
        amr = aided_task.get("mean_reader")
        if amr:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": [amr["fpr"]],
                    "y": [amr["tpr"]],
                    "name": f"Mean reader, AI-aided (FPR {amr['fpr']:.2f}, TPR {amr['tpr']:.2f})",
                    "marker": {"symbol": "x-open", "size": 15, "color": "#c62828", "line": {"width": 2}},
                }
            )
    axis = {
        "range": [-0.02, 1.02],
        "dtick": 0.2,
        "zeroline": False,
        "constrain": "domain",
        "gridcolor": "#e5ebf0",
        "showline": True,
        "linecolor": "#5d6b7a",
        "mirror": True,
        "ticks": "outside",
    }
    layout = {
        "xaxis": {**axis, "title": {"text": X_TITLE}},
        "yaxis": {**axis, "title": {"text": Y_TITLE}, "scaleanchor": "x", "scaleratio": 1},
        "legend": {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 11}},
        "margin": {"l": 60, "r": 10, "t": 40, "b": 55},
        "height": 520,
        "plot_bgcolor": "#fff",
        "paper_bgcolor": "#fff",
    }
    if title:
        layout["title"] = {"text": title, "font": {"size": 14}}
    else:
        layout["margin"]["t"] = 15
    return {"data": traces, "layout": layout}


def render_matplotlib(
    task: dict, *, aided_task: dict | None = None, title: str = "", fmt: str = "png", dpi: int = 150
) -> bytes:
    """The same chart as a PNG or SVG file."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.6, 5.4))
    ax = fig.add_axes([0.09, 0.11, 0.46, 0.8])
    ax.plot([0, 1], [0, 1], ls=":", color="#9aa5b1", lw=1, label="Chance")
    m = task.get("model")
    if m:
        ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], color=MODEL_COLOUR, lw=2.2, label=model_legend(m))
        y = m["youden"]
        ax.plot(
            [y["fpr"]],
            [y["tpr"]],
            marker="*",
            ms=15,
            color=MODEL_COLOUR,
            mec="white",
            ls="none",
            label=f"Model Youden point (sens {y['sensitivity']:.2f}, spec {y['specificity']:.2f})",
        )
    for r in task["readers"]:
        if r.get("roc") and len(task["readers"]) <= 8:
            ax.plot(
                r["roc"]["fpr"],
                r["roc"]["tpr"],
                lw=0.9,
                alpha=0.5,
                color=EXPERIENCE_COLOURS.get(r["experience"], "#888"),
                label=f"{r['name']} curve: AUC {r['auc']:.3f}",
            )
    for level, rows in _by_experience(task["readers"]):
        ax.plot(
            [r["fpr"] for r in rows],
            [r["tpr"] for r in rows],
            ls="none",
            marker=MPL_MARKERS.get(level, "o"),
            ms=8,
            color=EXPERIENCE_COLOURS.get(level, "#888"),
            mec="white",
            label=f"Readers: {EXPERIENCE_LABELS.get(level, level).lower()} (n={len(rows)})",
        )
    mr = task.get("mean_reader")
    if mr:
        ax.plot(
            [mr["fpr"]],
            [mr["tpr"]],
            ls="none",
            marker="X",
            ms=12,
            color="#1d2733",
            label=f"Mean reader (FPR {mr['fpr']:.2f}, TPR {mr['tpr']:.2f})",
        )
    if aided_task:
        pts = [r for r in aided_task["readers"] if r["tpr"] is not None and r["fpr"] is not None]
        if pts:
            ax.plot(
                [r["fpr"] for r in pts],
                [r["tpr"] for r in pts],
                ls="none",
                marker="o",
                mfc="none",
                mec="#c62828",
                mew=1.6,
                ms=8,
                label=f"Readers, AI-aided (n={len(pts)})",
            )
        amr = aided_task.get("mean_reader")
        if amr:
            ax.plot(
                [amr["fpr"]],
                [amr["tpr"]],
                ls="none",
                marker="x",
                ms=12,
                mew=2,
                color="#c62828",
                label=f"Mean reader, AI-aided (FPR {amr['fpr']:.2f}, TPR {amr['tpr']:.2f})",
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(X_TITLE)
    ax.set_ylabel(Y_TITLE)
    ax.grid(color="#e5ebf0", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=7.5, frameon=False)
    out = io.BytesIO()
    fig.savefig(out, format=fmt, dpi=dpi)
    return out.getvalue()
