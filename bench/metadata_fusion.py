"""Does patient metadata (age, sex, body site) add to the photo? Paired, on an artefact's hold-out.

    python bench/metadata_fusion.py MODEL_DIR DATA_DIR [--weight 0.5] [--alpha 20] [--json OUT]

Fits ``inference.ml.metadata.MetadataModel`` (per-field naive Bayes, sub-class and meta-class
tables) on the artefact's training split of DATA_DIR, runs the artefact on its held-out split (as
the portal serves it) and prints, for flat and product fusion and the coarse level, accuracy,
balanced accuracy, macro F1 and macro AUC without and with metadata, and the difference with a 95 %
class-stratified paired bootstrap interval. Also the metadata alone (the naive Bayes on the prior).

The numbers with metadata are ``evaluate.metadata_report``'s (the rules of
``metadata.fuse_with_metadata``, as the portal serves them).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M
from inference.ml.evaluate import artefact_records, metadata_report, model_probabilities, report_from_probs
from inference.ml.metadata import fit_levels
from inference.ml.train import TrainConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument(
        "--weight",
        type=float,
        default=TrainConfig.metadata_weight,
        help="exponent of the metadata factors (0-1; default: train's)",
    )
    ap.add_argument("--alpha", type=float, default=20.0, help="smoothing toward the prior, in photos")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    R = model_probabilities(a.model, a.data)
    P, y, tax = R["predictor"], R["y"], R["predictor"].taxonomy
    train, scope, _ = artefact_records(P, a.data, "train")
    if scope != "training split":
        sys.exit(f"{a.data} is not the artefact's training data: no training split to fit the metadata on")
    subs = tax.sub_classes
    ytr = np.array([subs.index(r.label) for r in train])
    models = fit_levels([r.meta for r in train], ytr, tax, a.alpha, a.weight)
    if models is None:
        sys.exit("no training photo carries age, sex or body site")
    fine_mm, coarse_mm = models
    test_meta = [r.meta for r in R["records"]]
    pf, pc = R["p_fine"], R["p_coarse"]
    base = report_from_probs(pf, pc, y, tax)  # the photo models alone
    wm = metadata_report(pf, pc, y, tax, fine_mm, coarse_mm, test_meta)  # what evaluate reports with metadata
    prior = np.tile(np.asarray(fine_mm.prior), (len(y), 1))
    print(
        f"{len(y)} held-out photos, {wm['with_metadata_share']:.1%} with at least one usable field; fields "
        f"{wm['fields']} values; alpha {a.alpha}, weight {a.weight}"
    )
    print(f"{'method':22s} {'acc':>6s} {'balacc':>7s} {'macroF1':>8s} {'AUC':>6s}")
    out = {"n": int(len(y)), "with_field_share": wm["with_metadata_share"], "alpha": a.alpha, "weight": a.weight}
    meta_only = M.classification_report_dict(y, fine_mm.apply(prior, test_meta), subs)
    _row("metadata alone", meta_only)
    out["metadata_alone"] = _slim(meta_only)
    for name, key in (("flat", "flat"), ("product", "hierarchical_product")):
        r0, r1, b = base[key], wm[key], wm["with_minus_without"][key]
        _row(f"{name}", r0)
        _row(f"{name} + metadata", r1)
        for k in ("balanced_accuracy", "macro_f1"):
            print(
                f"  {name} with - without {k:17s} {b[k]['diff']:+.4f}  95% CI [{b[k]['ci_low']:+.4f}, "
                f"{b[k]['ci_high']:+.4f}]"
            )
        out[name] = {"without": _slim(r0), "with": _slim(r1), "with_minus_without": b}
    _row("coarse", base["coarse"])
    _row("coarse + metadata", wm["coarse"])
    out["coarse"] = {"without": _slim(base["coarse"]), "with": _slim(wm["coarse"])}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))


def _slim(r):
    return {k: r[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")} | {
        "recall": {c: v["recall"] for c, v in r["per_class"].items()}
    }


def _row(label, r):
    print(f"{label:22s} {r['accuracy']:6.3f} {r['balanced_accuracy']:7.3f} {r['macro_f1']:8.3f} {r['macro_auc']:6.3f}")


if __name__ == "__main__":
    main()
