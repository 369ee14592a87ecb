"""Hold-out analysis of a trained artefact: how the fused ranking reacts to the class priors.

    python bench/fusion_analysis.py MODEL_DIR DATA_DIR [--probs probs.npz]

Computes the fine and coarse probabilities on the model's held-out split once (cached in
--probs), then prints flat and product fusion when each model's probabilities are divided by its
training class frequencies to the power a (a = 0: as trained). This is a diagnostic: it reads the
test split, so nothing it prints may be used to choose a default.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M
from inference.ml.taxonomy import fuse


def probs(model_dir, data_dir, cache):
    if cache and Path(cache).is_file():
        z = np.load(cache)
        return z["pf"], z["pc"], z["y"]
    from inference.ml.evaluate import model_probabilities

    R = model_probabilities(model_dir, data_dir)
    pf, pc, y = R["p_fine"], R["p_coarse"], R["y"]
    if cache:
        np.savez(cache, pf=pf, pc=pc, y=y)
    return pf, pc, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--probs")
    a = ap.parse_args()
    from inference.ml.taxonomy import Taxonomy

    tax = Taxonomy.from_json(Path(a.model) / "taxonomy.json")
    man = json.loads((Path(a.model) / "model.json").read_text())
    pf, pc, y = probs(a.model, a.data, a.probs)
    counts = np.array([man["data"]["class_counts"][s] for s in tax.sub_classes], float)
    prior_f = counts / counts.sum()
    prior_c = np.array([counts[tax.parent_index == m].sum() for m in range(len(tax.meta_classes))]) / counts.sum()

    def adj(p, prior, e):
        q = p / prior**e
        return q / q.sum(1, keepdims=True)

    print(f"{'fine a':>6} {'coarse a':>8} {'method':>8}  acc    balacc macroF1")
    for ef in (0.0, 0.25, 0.5):
        for ec in (0.0, 0.5, 1.0):
            for meth in ("flat", "product"):
                if meth == "flat" and ec:
                    continue
                p = fuse(adj(pc, prior_c, ec), adj(pf, prior_f, ef), tax, meth)
                r = M.classification_report_dict(y, p, tax.sub_classes)
                print(
                    f"{ef:6.2f} {ec:8.2f} {meth:>8}  {r['accuracy']:.3f}  {r['balanced_accuracy']:.3f}  {r['macro_f1']:.3f}"
                )


if __name__ == "__main__":
    main()
