"""Two-stage fine-to-coarse vs single-stage binary model for a binary question (METHODS.md section 3).

    python bench/binary_baseline.py MODEL_DIR DATA_DIR --positive mel [--epochs 6] [--json OUT]

Trains a single-stage binary model (same backbone, ImageNet init and recipe as the artefact) on the
artefact's training split with labels positive / not positive, and compares on the held-out split:
AUC with DeLong 95% CI and the Youden point for (a) the two-stage score = sum of the fine model's
probabilities of the positive sub-classes, (b) the same on product-fused probabilities, (c) the
single-stage model; plus the paired DeLong test (a) vs (c).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.data import split_by_cases
from inference.ml.evaluate import report_from_probs
from inference.ml.infer import model_outputs
from inference.ml.networks import freeze_first_blocks
from inference.ml.predict import Predictor
from inference.ml.train import TrainConfig, build_model, fit, prepare_data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--positive", default="mel")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    positive = [p for p in a.positive.split(",") if p]
    P = Predictor.load(a.model)
    fields = {k: v for k, v in P.manifest["training"].items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{**fields, "data": a.data, "taxonomy": P.taxonomy.to_dict(), "out": "/nonexistent"})
    D = prepare_data(cfg, P.taxonomy)
    assert D["fingerprint"] == P.manifest["data"]["fingerprint"], "DATA_DIR is not the artefact's training data"
    tr, te = split_by_cases(D["records"], set(P.manifest["split"]["test_cases"]))
    subs = np.array(P.taxonomy.sub_classes)
    yb = np.isin(subs[D["y_sub"]], positive).astype(np.int64)
    t = time.time()
    binary = build_model(cfg, 2)
    frozen = freeze_first_blocks(binary, cfg.freeze_blocks)
    info = fit(
        binary,
        D["images"],
        yb,
        tr,
        cfg,
        "binary",
        a.epochs,
        None,
        frozen,
        progress=lambda d: print(d, flush=True) if d.get("event") == "epoch_end" else None,
    )
    train_s = time.time() - t
    pre = P.manifest["preprocessing"]
    xte = D["images"][torch.as_tensor(te)]
    pf = model_outputs(P.fine_model, xte, pre["mean"], pre["std"], 64, P.tta)
    pc = model_outputs(P.coarse_model, xte, pre["mean"], pre["std"], 64, P.tta)
    pb = model_outputs(binary, xte, pre["mean"], pre["std"], 64, P.tta)[:, 1]
    rep = report_from_probs(pf, pc, D["y_sub"][te], P.taxonomy, positive=positive, p_binary=pb)
    ts = rep["two_stage"]
    out = {
        "positive": positive,
        "binary_epochs": a.epochs,
        "fine_epochs": P.manifest["training"]["epochs"],
        "binary_train_seconds": train_s,
        "binary_train_images_per_second": info["images_per_second"],
        **ts,
    }
    for k in ("two_stage_fine", "two_stage_product", "single_stage"):
        b = ts[k]
        print(
            f"{b['name']:45s} AUC {b['auc']:.4f} [{b['ci_low']:.4f}, {b['ci_high']:.4f}]  Youden thr {b['youden']['threshold']:.3f} "
            f"sens {b['youden']['sensitivity']:.3f} spec {b['youden']['specificity']:.3f}"
        )
    t2 = ts["delong_two_stage_vs_single"]
    print(f"paired DeLong two-stage - single-stage: diff {t2['diff']:+.4f}, z {t2['z']:.2f}, p {t2['p_value']:.4g}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
