"""Compare two trained artefacts on the same held-out photos, with paired bootstrap intervals.

    python bench/compare_runs.py MODEL_A MODEL_B DATA_DIR [--precision auto|fp32|bf16|int8]
           [--precision-a P] [--precision-b P] [--views 2] [--views-a V] [--views-b V]
           [--members-a N] [--members-b N] [--size-a PX] [--size-b PX]

Both artefacts must hold the same test cases (same data, split and seed). For flat and product
fusion prints accuracy, balanced accuracy and macro F1 of A and B and the difference B - A in
balanced accuracy and macro F1 with a 95 % class-stratified paired bootstrap interval: is a new
recipe better than the old one on these photos, or within the noise of a 1,197-photo hold-out?
The interval covers the choice of test photos only, not the training seed. Also prints, for A and
for B, product fusion minus flat with the same kind of interval.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M
from inference.ml.evaluate import model_probabilities
from inference.ml.taxonomy import fuse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("data")
    ap.add_argument("--precision", default=None, help="both models (default auto, as the portal serves)")
    ap.add_argument("--precision-a", default=None, help="A only, e.g. fp32 against --precision-b int8")
    ap.add_argument("--precision-b", default=None)
    ap.add_argument("--views", type=int, default=None, help="test-time views of both (default: each artefact's)")
    ap.add_argument("--views-a", type=int, default=None, help="A only, e.g. 2 against --views-b 1 on one artefact")
    ap.add_argument("--views-b", type=int, default=None)
    ap.add_argument("--members-a", type=int, default=None, help="fine models of A to use (default: all)")
    ap.add_argument("--members-b", type=int, default=None, help="fine models of B to use (default: all)")
    ap.add_argument(
        "--size-a",
        type=int,
        default=None,
        help="input size of A in px (default: the artefact's), e.g. 160 against --size-b 192",
    )
    ap.add_argument("--size-b", type=int, default=None)
    a = ap.parse_args()
    R = [
        model_probabilities(m, a.data, pr or a.precision, views=v or a.views, members=k, size=sz)
        for m, k, pr, v, sz in (
            (a.model_a, a.members_a, a.precision_a, a.views_a, a.size_a),
            (a.model_b, a.members_b, a.precision_b, a.views_b, a.size_b),
        )
    ]
    ta, tb = (set(r["predictor"].manifest["split"]["test_cases"]) for r in R)
    if ta != tb or not np.array_equal(R[0]["y"], R[1]["y"]):
        sys.exit("the two artefacts were not evaluated on the same held-out photos (different split or data)")
    tax, y = R[0]["predictor"].taxonomy, R[0]["y"]
    print(
        f"{len(y)} held-out photos; A = {a.model_a}, B = {a.model_b}; precision {R[0]['predictor'].precision} / {R[1]['predictor'].precision}"
        f"; input {R[0]['predictor'].size} / {R[1]['predictor'].size} px"
    )
    print(f"{'method':8s} {'model':5s} {'acc':>6s} {'balacc':>7s} {'macroF1':>8s}")
    for meth in ("flat", "product"):
        preds = []
        for name, r in zip("AB", R):
            p = fuse(r["p_coarse"], r["p_fine"], tax, meth)
            rep = M.classification_report_dict(y, p, tax.sub_classes)
            preds.append(p.argmax(1))
            print(f"{meth:8s} {name:5s} {rep['accuracy']:6.3f} {rep['balanced_accuracy']:7.3f} {rep['macro_f1']:8.3f}")
        print(f"{meth:8s} A and B rank the same class first for {np.mean(preds[0] == preds[1]):.1%} of the photos")
        _print_diff(f"{meth:8s} B - A", M.paired_bootstrap(y, preds[0], preds[1], len(tax.sub_classes)))
    # the issue's fusion target on each model: product fusion against the flat fine model
    for name, r in zip("AB", R):
        flat, prod = (fuse(r["p_coarse"], r["p_fine"], tax, m).argmax(1) for m in ("flat", "product"))
        _print_diff(f"{name}: product - flat", M.paired_bootstrap(y, flat, prod, len(tax.sub_classes)))


def _print_diff(label, b):
    for k in ("balanced_accuracy", "macro_f1"):
        print(
            f"{label} {k:17s} {b[k]['diff']:+.4f}  95% CI [{b[k]['ci_low']:+.4f}, {b[k]['ci_high']:+.4f}]"
            f"  share of resamples below 0: {b[k]['share_below_zero']:.3f}"
        )


if __name__ == "__main__":
    main()
