"""Where the issue-3 targets stand over several pipeline runs: one row per results file of
bench/run_pipeline.py, then the mean and spread over them and how many runs reach each target.

    python bench/summarize_runs.py bench/results/def_s*.json [--markdown]

A row gives the split (seed), the image plan (224, "224 from 160", 160; "set" when the run set the
size, else the size probe chose it), the training minutes (fine + transfer + coarse; with a reused
fine model, its recorded training time included), whether the CPU was shared (mean 1-minute load
average above SHARED_LOAD: the run alone keeps it near 2 on 2 cores, so its minutes are then not a
valid time), the training settings that differ from the defaults (the lever; a column only when
some run has them), product and flat accuracy / balanced accuracy / macro F1 / macro AUC, and
product minus flat with its paired-bootstrap 95 % interval.
"""

import argparse
import json
import statistics
import sys
from dataclasses import MISSING, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.train import TrainConfig

# the targets (issue 3); product fusion is the differential the portal shows
TARGETS = {"accuracy": 0.85, "balanced_accuracy": 0.75, "macro_auc": 0.95}
TRAIN_MINUTES = 60.0
SHARED_LOAD = 2.6
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
# settings every pipeline run has of its own (not a lever): paths, split, image plan, the binary question
RUN_SETTINGS = ("data", "taxonomy", "out", "seed", "image_size", "progressive_size", "positive", "cache_dir", "threads")


def plan(settings: dict) -> str:
    size, low = settings.get("image_size"), settings.get("progressive_size")
    text = f"{size} from {low}" if low else f"{size}"
    return text + (" (set)" if settings.get("image_size_choice") is None else "")  # no record: the size was set


def overrides(settings: dict) -> str:
    """The run's training settings that differ from TrainConfig's defaults, besides the split, the image
    plan and what every pipeline run sets (the lever it measures), from the settings the artefact records."""
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory()
        for f in fields(TrainConfig)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
    epochs_set = settings.get("epochs_set") or {}
    skip = set(RUN_SETTINGS) | {
        k for k, stage in (("epochs", "fine"), ("coarse_epochs", "coarse")) if not epochs_set.get(stage)
    }  # resolved from None, not set
    return " ".join(
        f"{k}={json.dumps(v)}" for k, v in settings.items() if k in defaults and k not in skip and v != defaults[k]
    )


def mean_load(samples: list) -> float | None:
    loads = [float(s[1][0]) for s in samples[2:]]  # the first minute still shows the load before the run
    return statistics.fmean(loads) if loads else None


def row(name: str, r: dict) -> dict:
    m = r["metrics"]
    boot = m.get("product_minus_flat_bootstrap") or {}
    load = mean_load(r.get("loadavg_samples") or [])
    return {
        "name": name,
        "seed": r["settings"].get("seed"),
        "plan": plan(r["settings"]),
        "overrides": overrides(r["settings"]),
        # a run that reused a fine model (fine_from) counts that model's recorded training time too
        "minutes": r.get("training_minutes_including_reused_fine", r["training_minutes_fine_transfer_coarse"]),
        "fine_reused": bool(r["settings"].get("fine_from")),
        "load": load,
        "shared": load is not None and load > SHARED_LOAD,
        "product": {k: m["hierarchical_product"][k] for k in METRICS},
        "flat": {k: m["flat"][k] for k in METRICS},
        "minus": {
            k: (boot[k]["diff"], boot[k]["ci_low"], boot[k]["ci_high"])
            if k in boot
            else (m["product_minus_flat"][k], None, None)
            for k in ("balanced_accuracy", "macro_f1")
        },
    }


def summarize(rows: list[dict]) -> dict:
    """Mean and standard deviation of the product's metrics over the runs, and how many runs reach
    each target (training time counted only over runs that had the CPU to themselves)."""
    out = {"n": len(rows), "mean": {}, "sd": {}, "reached": {}}
    for k in METRICS:
        vals = [r["product"][k] for r in rows]
        out["mean"][k] = statistics.fmean(vals)
        out["sd"][k] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    for k, t in TARGETS.items():
        out["reached"][k] = sum(r["product"][k] >= t for r in rows)
    out["reached"]["product_ge_flat"] = sum(all(r["minus"][k][0] >= 0 for k in r["minus"]) for r in rows)
    alone = [r for r in rows if not r["shared"]]
    out["alone"] = len(alone)
    out["reached"]["training_minutes"] = sum(r["minutes"] <= TRAIN_MINUTES for r in alone)
    return out


def _m(d: dict) -> str:
    return " / ".join(f"{d[k]:.3f}" for k in METRICS)


def _minus(t: tuple) -> str:
    d, lo, hi = t
    return f"{d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")


def render(rows: list[dict], s: dict, markdown: bool) -> str:
    head = [
        "run",
        "split",
        "plan",
        "training",
        "product (acc / bal / F1 / AUC)",
        "flat",
        "product - flat: bal. acc.",
        "macro F1",
    ]
    lines = []
    for r in rows:
        minutes = (
            f"{r['minutes']:.1f} min"
            + (" (fine model reused)" if r["fine_reused"] else "")
            + (f" (shared CPU, load {r['load']:.1f})" if r["shared"] else "")
        )
        lines.append(
            [
                r["name"],
                str(r["seed"]),
                r["plan"],
                minutes,
                _m(r["product"]),
                _m(r["flat"]),
                _minus(r["minus"]["balanced_accuracy"]),
                _minus(r["minus"]["macro_f1"]),
            ]
        )
    if any(r["overrides"] for r in rows):  # runs of a lever beside the default's: say which is which
        head.insert(1, "overrides")
        for cells, r in zip(lines, rows):
            cells.insert(1, r["overrides"] or "(default)")
    if markdown:
        text = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        text += ["| " + " | ".join(c) + " |" for c in lines]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *lines)]
        text = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [head, *lines]]
    n = s["n"]
    text.append("")
    text.append(
        f"product over {n} runs, mean (sd): "
        + " / ".join(f"{k} {s['mean'][k]:.3f} ({s['sd'][k]:.3f})" for k in METRICS)
    )
    text.append(
        "targets reached (runs): "
        + ", ".join(f"{k} >= {t}: {s['reached'][k]} of {n}" for k, t in TARGETS.items())
        + f", product >= flat in balanced accuracy and macro F1: {s['reached']['product_ge_flat']} of {n}"
        + f", training <= {TRAIN_MINUTES:.0f} min: {s['reached']['training_minutes']} of {s['alone']} run alone"
    )
    return "\n".join(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results JSON files of bench/run_pipeline.py")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    a = ap.parse_args(argv)
    rows = []
    for f in a.results:
        try:
            rows.append(row(Path(f).stem, json.loads(Path(f).read_text())))
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.exit(f"{f}: not a results file of bench/run_pipeline.py ({type(e).__name__}: {e})")
    print(render(rows, summarize(rows), a.markdown))


if __name__ == "__main__":
    main()
