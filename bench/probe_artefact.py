"""A stand-in artefact in minutes: the ImageNet-pretrained EfficientNet-Lite0 backbone, frozen, with
fine and coarse heads fitted as logistic regressions on its pooled features of a few training photos
per class (the held-out cases never enter).

    python bench/probe_artefact.py DATA OUT [--per-class 80] [--size 224] [--seed 0]

For benches that need a model that has seen the photos' classes (e.g. bench/gradcam_placement.py)
when no trained artefact is at hand. Its accuracy is far below a trained model's and its features
are ImageNet's: numbers measured on it say what a method does with these features, not what it
does with a fine-tuned network. The manifest keeps DATA's fingerprint and a case-grouped 20 %
hold-out (``data.holdout_split``) so ``evaluate.artefact_records`` picks the held-out photos.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TAXONOMY = ROOT / "inference" / "ml" / "taxonomies" / "ham10000.json"


def build(data, out, per_class: int = 80, size: int = 224, seed: int = 0, log=print) -> Path:
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from inference.ml import artefact as art
    from inference.ml.data import (
        data_fingerprint,
        filter_to_taxonomy,
        holdout_split,
        load_image,
        normalise,
        read_dataset,
    )
    from inference.ml.infer import ood_fit
    from inference.ml.networks import Classifier
    from inference.ml.taxonomy import Taxonomy
    from inference.ml.train import TrainConfig, preprocessing_for
    from inference.ml.weights import load_imagenet_lite0

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tax = Taxonomy.from_json(TAXONOMY)
    records, _ = read_dataset(data)
    records, _ = filter_to_taxonomy(records, tax)
    tr, te = holdout_split(records, 0.2, seed)
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i in rng.permutation(tr):
        by_class.setdefault(records[i].label, []).append(int(i))
    pick = [i for c in sorted(by_class) for i in by_class[c][:per_class]]
    eval_idx = [int(i) for i in rng.permutation(te)[: 4 * len(tax.sub_classes) * 10]]
    cfg = TrainConfig(data=str(data), taxonomy=str(TAXONOMY), out=str(out), image_size=size)
    pre = preprocessing_for(cfg)
    net = Classifier("efficientnet_lite0", len(tax.sub_classes))
    load_imagenet_lite0(net)
    net.eval()

    @torch.no_grad()
    def feats(idx):
        rows = []
        for s in range(0, len(idx), 16):
            u8 = torch.stack(
                [torch.from_numpy(load_image(records[i].path, size).transpose(2, 0, 1).copy()) for i in idx[s : s + 16]]
            )
            rows.append(net.features(normalise(u8, pre["mean"], pre["std"])).numpy())
        return np.concatenate(rows)

    t0 = time.time()
    X, Xe = feats(pick), feats(eval_idx)
    log(f"features of {len(pick)} training + {len(eval_idx)} held-out photos in {time.time() - t0:.0f} s")
    mu, sd = X.mean(0), X.std(0) + 1e-6
    torch.manual_seed(seed)
    heads = {}
    for name, classes, label_of in (
        ("fine", tax.sub_classes, lambda r: r.label),
        ("coarse", tax.meta_classes, lambda r: tax.parent(r.label)),
    ):
        y = np.array([classes.index(label_of(records[i])) for i in pick])
        ye = np.array([classes.index(label_of(records[i])) for i in eval_idx])
        lr = LogisticRegression(C=0.05, class_weight="balanced", max_iter=3000).fit((X - mu) / sd, y)
        W = np.zeros((len(classes), X.shape[1]), np.float32)
        b = np.full(len(classes), -1e4, np.float32)  # a class with no training photo is never predicted
        W[lr.classes_] = lr.coef_ / sd
        b[lr.classes_] = lr.intercept_ - (lr.coef_ / sd) @ mu
        m = Classifier("efficientnet_lite0", len(classes))
        m.load_state_dict(
            {
                **{k: v for k, v in net.state_dict().items() if not k.startswith("fc.")},
                "fc.weight": torch.from_numpy(W),
                "fc.bias": torch.from_numpy(b),
            }
        )
        art.save_state(m, out / f"{name}.safetensors")
        heads[name] = balanced_accuracy_score(ye, lr.predict((Xe - mu) / sd))
    means, ood_threshold = ood_fit(
        X, np.array([tax.sub_classes.index(records[i].label) for i in pick]), len(tax.sub_classes)
    )
    save_file({"class_means": torch.from_numpy(means)}, str(out / "ood.safetensors"))
    tax.to_json(out / "taxonomy.json")
    art.write_json(out / "metrics.json", {"probe_balanced_accuracy_heldout_sample": heads})
    art.write_json(
        out / art.MANIFEST,
        {
            "format_version": art.FORMAT_VERSION,
            "backbone": "efficientnet_lite0",
            "num_fine": len(tax.sub_classes),
            "num_coarse": len(tax.meta_classes),
            "transfer_cut": "none",
            "preprocessing": pre,
            "tta": True,
            "positive": None,
            "has_binary": False,
            "training": {
                "note": f"ImageNet backbone, logistic-regression heads on {len(pick)} photos (bench stand-in)"
            },
            "seed": seed,
            "data": {"fingerprint": data_fingerprint(records), "n_images": len(records)},
            "split": {"test_cases": sorted({records[i].case_id for i in te})},
            "ood": {"method": "cosine distance to class means (bench stand-in)", "threshold": ood_threshold},
            "code_version": art.code_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    log(
        f"{out}: balanced accuracy on {len(eval_idx)} held-out photos: fine {heads['fine']:.3f}, "
        f"coarse {heads['coarse']:.3f}"
    )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    build(a.data, a.out, a.per_class, a.size, a.seed)


if __name__ == "__main__":
    main()
