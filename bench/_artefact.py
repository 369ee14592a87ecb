"""Bench helper: a freshly initialised EfficientNet-Lite0 artefact (ImageNet backbone, random
heads) for timing when no trained artefact is at hand. Timing does not depend on trained weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def fresh_lite0_artefact(out: Path, image_size: int = 192) -> Path:
    from safetensors.torch import save_file

    from inference.ml import artefact as art
    from inference.ml.networks import Classifier
    from inference.ml.taxonomy import Taxonomy
    from inference.ml.train import TrainConfig, preprocessing_for
    from inference.ml.weights import load_imagenet_lite0

    out = Path(out)
    if (out / art.MANIFEST).is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tax_path = Path(__file__).resolve().parents[1] / "inference" / "ml" / "taxonomies" / "ham10000.json"
    tax = Taxonomy.from_json(tax_path)
    tax.to_json(out / "taxonomy.json")
    torch.manual_seed(0)
    for name, n in (("fine", len(tax.sub_classes)), ("coarse", len(tax.meta_classes))):
        m = Classifier("efficientnet_lite0", n)
        load_imagenet_lite0(m)
        art.save_state(m, out / f"{name}.safetensors")
    save_file(
        {
            "class_means": torch.from_numpy(
                np.random.default_rng(0).normal(size=(len(tax.sub_classes), 1280)).astype(np.float32)
            )
        },
        str(out / "ood.safetensors"),
    )
    art.write_json(out / "metrics.json", {})
    cfg = TrainConfig(data="", taxonomy=str(tax_path), out=str(out), image_size=image_size)
    art.write_json(
        out / art.MANIFEST,
        {
            "format_version": art.FORMAT_VERSION,
            "backbone": "efficientnet_lite0",
            "num_fine": len(tax.sub_classes),
            "num_coarse": len(tax.meta_classes),
            "transfer_cut": "none",
            "preprocessing": preprocessing_for(cfg),
            "tta": True,
            "positive": None,
            "has_binary": False,
            "training": {"note": "untrained heads: timing only"},
            "seed": 0,
            "data": {"fingerprint": "untrained-timing-artefact", "n_images": 0},
            "split": {"test_cases": []},
            "ood": {"method": "random means (timing only)", "threshold": 2.0},
            "code_version": art.code_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return out


def sample_images(data_dir: str | None, n: int, size=(600, 450)):
    """n PIL images: from a data directory's images/ when given, else generated lesions."""
    from PIL import Image

    if data_dir:
        files = sorted((Path(data_dir) / "images").glob("*.jpg"))[:n]
        if files:
            return [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(0)
    out = []
    for _i in range(n):
        img = np.full((size[1], size[0], 3), (205, 160, 140), np.float32) + rng.normal(0, 12, (size[1], size[0], 3))
        yy, xx = np.mgrid[: size[1], : size[0]]
        r = min(size) * rng.uniform(0.15, 0.3)
        m = (yy - size[1] / 2) ** 2 + (xx - size[0] / 2) ** 2 < r * r
        img[m] = rng.uniform(20, 200, 3)
        out.append(Image.fromarray(img.clip(0, 255).astype(np.uint8)))
    return out


def pct(values, q):
    return float(np.percentile(np.asarray(values, float), q))


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])
