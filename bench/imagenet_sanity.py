"""Sanity check of the ImageNet weight mapping on natural photos (no network needed).

    python bench/imagenet_sanity.py

Runs the pretrained EfficientNet-Lite0 with its 1000-way ImageNet head on the two sample photos
shipped with scikit-learn (china.jpg: a Chinese temple; flower.jpg: a flower) and prints the top-3
classes and the entropy for the two candidate normalisations (mean/std 0.5 vs the torchvision
ImageNet statistics) and BatchNorm eps (1e-3 of TF-ported weights vs 1e-5).
"""

import importlib.resources as r
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.networks import Classifier
from inference.ml.weights import load_imagenet

NAMES = {
    698: "palace",
    442: "bell cote",
    483: "castle",
    449: "boathouse",
    985: "daisy",
    947: "mushroom",
    619: "lampshade",
    108: "sea anemone",
    599: "honeycomb",
    738: "pot",
    883: "vase",
}

torch.set_num_threads(2)
BACKBONE = sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0"  # or efficientnet_lite1 / efficientnet_lite2
m = Classifier(BACKBONE, 1000)
rep = load_imagenet(m, include_classifier=True)
m.eval()
print("mapped tensors:", rep["tensors"])
imgs = []
for n in ["china.jpg", "flower.jpg"]:
    im = Image.open(str(r.files("sklearn.datasets").joinpath("images", n))).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224), Image.BICUBIC)
    imgs.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
x = torch.stack(imgs)
for name, mean, std in [
    ("mean/std 0.5", (0.5,) * 3, (0.5,) * 3),
    ("torchvision", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
]:
    for eps in [1e-3, 1e-5]:
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eps = eps
        xx = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        with torch.no_grad():
            p = m(xx).softmax(1)
        top = p.topk(3)
        ent = (-(p * p.clamp_min(1e-12).log()).sum(1)).numpy().round(2)
        for i, img in enumerate(["china", "flower"]):
            desc = ", ".join(f"{NAMES.get(int(c), c)} {float(v):.3f}" for v, c in zip(top.values[i], top.indices[i]))
            print(f"{name:13s} eps {eps:g} {img:6s}: {desc}  (entropy {ent[i]}, uniform = 6.91)")
