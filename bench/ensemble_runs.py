"""What would an ensemble of the same recipe's trainings give? Average artefacts trained on one split.

    python bench/ensemble_runs.py MODEL MODEL [MODEL ...] DATA_DIR [--precision auto|fp32|bf16]

Every artefact must hold the same test cases (same data and split; e.g. runs that differ only in
``train_seed``). Prints, for flat and product fusion, accuracy / balanced accuracy / macro F1 /
macro AUC of every model alone and their mean, then of the mean-probability ensembles of k models
(k = 2 .. n; the mean over every k-subset), two ways:

- ``fine``: the k fine models averaged, each subset's first coarse model kept (what ``--fine-models
  k`` trains: members share one coarse model; k fine stages, one coarse stage);
- ``both``: fine and coarse models averaged (k whole hierarchies, k times the training).

Then the n-model ensembles against the first model with a 95 % class-stratified paired bootstrap
interval (test photos only). The spread between single models is the training's own draws; an
ensemble's gain over the single models' mean is what averaging buys on these photos.
"""

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M
from inference.ml.evaluate import model_probabilities
from inference.ml.taxonomy import fuse

KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def scores(y, p, names) -> np.ndarray:
    rep = M.classification_report_dict(y, p, names)
    return np.array([rep[k] for k in KEYS])


def ensemble(runs: list[dict], subset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean fine probabilities of ``subset``; coarse: the first member's (fine) or the mean (both)."""
    pf = np.mean([runs[i]["p_fine"] for i in subset], axis=0)
    if mode == "fine":
        pc = runs[subset[0]]["p_coarse"]
    else:
        pc = np.mean([runs[i]["p_coarse"] for i in subset], axis=0)
    return pf, pc


def diffs(b: dict) -> str:
    """A paired bootstrap's balanced-accuracy and macro-F1 differences with their intervals."""
    return ", ".join(
        f"{k} {b[k]['diff']:+.4f} [{b[k]['ci_low']:+.4f}, {b[k]['ci_high']:+.4f}]"
        for k in ("balanced_accuracy", "macro_f1")
    )


def fmt(v: np.ndarray) -> str:
    return " / ".join(f"{x:.3f}" for x in v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", help="MODEL MODEL [MODEL ...] DATA_DIR")
    ap.add_argument("--precision", default=None, help="as the portal serves (default auto)")
    a = ap.parse_args()
    if len(a.paths) < 3:
        sys.exit("give at least two model directories and the data directory")
    models, data = a.paths[:-1], a.paths[-1]
    runs = [model_probabilities(m, data, a.precision) for m in models]
    cases = [set(r["predictor"].manifest["split"]["test_cases"]) for r in runs]
    for m, r, c in zip(models[1:], runs[1:], cases[1:]):
        if c != cases[0] or not np.array_equal(r["y"], runs[0]["y"]):
            sys.exit(f"{m} was not evaluated on the held-out photos of {models[0]} (other split or data)")
    tax, y = runs[0]["predictor"].taxonomy, runs[0]["y"]
    names, n = tax.sub_classes, len(runs)
    print(f"{len(y)} held-out photos, {n} models; accuracy / balanced accuracy / macro F1 / macro AUC")
    for meth in ("flat", "product"):
        single = [scores(y, fuse(r["p_coarse"], r["p_fine"], tax, meth), names) for r in runs]
        for m, s in zip(models, single):
            print(f"{meth:8s} {'single':12s} {fmt(s)}  {m}")
        print(f"{meth:8s} {'single mean':12s} {fmt(np.mean(single, axis=0))}")
        for mode in ("fine", "both"):
            if meth == "flat" and mode == "both":
                continue  # flat ignores the coarse models
            for k in range(2, n + 1):
                sub = []
                for subset in itertools.combinations(range(n), k):
                    pf, pc = ensemble(runs, subset, mode)
                    sub.append(scores(y, fuse(pc, pf, tax, meth), names))
                label = f"{mode} k={k}" + (f" ({len(sub)})" if len(sub) > 1 else "")
                print(
                    f"{meth:8s} {label:12s} {fmt(np.mean(sub, axis=0))}"
                    + (
                        f"  range of balanced accuracy {min(s[1] for s in sub):.3f}-{max(s[1] for s in sub):.3f}"
                        if len(sub) > 1
                        else ""
                    )
                )
    first = {m: fuse(runs[0]["p_coarse"], runs[0]["p_fine"], tax, m).argmax(1) for m in ("flat", "product")}
    full = {mode: ensemble(runs, tuple(range(n)), mode) for mode in ("fine", "both")}
    for meth, mode in (("flat", "fine"), ("product", "fine"), ("product", "both")):
        pf, pc = full[mode]
        b = M.paired_bootstrap(y, first[meth], fuse(pc, pf, tax, meth).argmax(1), len(names))
        print(f"{meth} {mode} k={n} minus the first model: {diffs(b)}")
    for mode, (pf, pc) in full.items():
        flat, prod = (fuse(pc, pf, tax, m).argmax(1) for m in ("flat", "product"))
        print(f"{mode} k={n}: product minus flat: {diffs(M.paired_bootstrap(y, flat, prod, len(names)))}")


if __name__ == "__main__":
    main()
