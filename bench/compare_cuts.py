"""Compare granularity-transfer cut points, re-using the fine model of a trained artefact.

    python bench/compare_cuts.py MODEL_DIR DATA_DIR [--cuts none,4,8,11,all] [--epochs 3] [--json OUT]

For each cut k a coarse model is initialised from the artefact's fine model up to block k and from
ImageNet after it, trained on the meta-classes of the artefact's training split (same recipe,
``--epochs`` epochs: fewer than the full run to fit the time budget), then evaluated on the
held-out split: coarse metrics and product-fused sub-class metrics.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.data import split_by_cases
from inference.ml.evaluate import report_from_probs
from inference.ml.infer import model_outputs
from inference.ml.networks import parse_cut, transfer_cut
from inference.ml.predict import Predictor
from inference.ml.train import TrainConfig, build_model, coarse_frozen, fit, prepare_data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--cuts", default="none,4,8,11,all")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--class-balance", default=None, help="override the coarse model's class balancing")
    a = ap.parse_args()
    torch.set_num_threads(2)
    P = Predictor.load(a.model)
    tr_settings = P.manifest["training"]
    fields = {k: v for k, v in tr_settings.items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{**fields, "data": a.data, "taxonomy": P.taxonomy.to_dict(), "out": "/nonexistent"})
    D = prepare_data(cfg, P.taxonomy)
    if a.class_balance:
        cfg = replace(cfg, class_balance=a.class_balance)
    assert D["fingerprint"] == P.manifest["data"]["fingerprint"], "DATA_DIR is not the artefact's training data"
    tr, te = split_by_cases(D["records"], set(P.manifest["split"]["test_cases"]))
    imgs, y_sub, y_meta = D["images"], D["y_sub"], D["y_meta"]
    pre = P.manifest["preprocessing"]
    xte = imgs[torch.as_tensor(te)]
    pf = model_outputs(P.fine_model, xte, pre["mean"], pre["std"], 64, P.tta)
    fine = P.fine_model
    for p in fine.parameters():
        p.requires_grad_(True)
    results = {}
    for cut in a.cuts.split(","):
        t = time.time()
        coarse = build_model(cfg, len(P.taxonomy.meta_classes))
        c = parse_cut(cut, coarse)
        transfer_cut(coarse, fine, c)
        frozen = coarse_frozen(cfg, coarse, c)
        info = fit(coarse, imgs, y_meta, tr, cfg, "coarse", a.epochs, None, frozen)
        pc = model_outputs(coarse, xte, pre["mean"], pre["std"], 64, P.tta)
        rep = report_from_probs(pf, pc, y_sub[te], P.taxonomy)
        row = {
            "cut": c,
            "class_balance": cfg.class_balance,
            "epochs": a.epochs,
            "train_seconds": time.time() - t,
            "train_images_per_second": info["images_per_second"],
        }
        for k in ("coarse", "hierarchical_product", "hierarchical_hard", "flat"):
            row[k] = {m: rep[k][m] for m in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")}
        results[str(c)] = row
        print(json.dumps(row), flush=True)
    print(
        f"{'cut':>5s} {'coarse acc':>10s} {'coarse bal':>10s} {'coarse AUC':>10s} {'prod bal':>9s} {'prod F1':>8s} {'flat bal':>9s} {'s':>6s}"
    )
    for k, r in results.items():
        print(
            f"{k:>5s} {r['coarse']['accuracy']:10.4f} {r['coarse']['balanced_accuracy']:10.4f} "
            f"{r['coarse']['macro_auc']:10.4f} {r['hierarchical_product']['balanced_accuracy']:9.4f} "
            f"{r['hierarchical_product']['macro_f1']:8.4f} {r['flat']['balanced_accuracy']:9.4f} {r['train_seconds']:6.0f}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"epochs": a.epochs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
