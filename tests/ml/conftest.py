import csv
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TAX = {
    "name": "toy",
    "version": 1,
    "meta_classes": {"warm": ["red", "orange"], "cool": ["blue", "green"]},
    "malignancy": {"red": 3, "orange": 1, "blue": 2, "green": 1},
    "display_names": {"red": "Red lesion"},
}
COLOURS = {
    "red": (200, 40, 40),
    "orange": (220, 140, 30),
    "blue": (40, 60, 200),
    "green": (40, 180, 60),
    "purple": (120, 40, 160),
}


def make_dataset(
    root,
    n_per_class=10,
    classes=("red", "orange", "blue", "green"),
    size=40,
    seed=0,
    extra_labels=(),
    photos_per_case=2,
    fmt="generic",
):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for label in list(classes) + list(extra_labels):
        for i in range(n_per_class):
            case = f"case_{label}_{i // photos_per_case}"
            base = np.full((size, size, 3), 128, np.float32) + rng.normal(0, 20, (size, size, 3))
            c = np.array(COLOURS[label], np.float32)
            yy, xx = np.mgrid[:size, :size]
            r = size * rng.uniform(0.2, 0.35)
            m = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r
            base[m] = c + rng.normal(0, 15, (int(m.sum()), 3))
            name = f"img_{k:04d}.jpg" if fmt == "generic" else f"ISIC_{k:07d}"
            Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(
                img_dir / (name if fmt == "generic" else name + ".jpg")
            )
            rows.append((name, label, case))
            k += 1
    if fmt == "generic":
        with open(root / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "label", "case_id"])
            w.writerows(rows)
    else:
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
            for name, label, case in rows:
                w.writerow([case, name, label, "histo", "50.0", "male", "trunk"])
    return root


@pytest.fixture
def taxonomy_file(tmp_path):
    p = tmp_path / "tax.json"
    p.write_text(json.dumps(TAX))
    return p


@pytest.fixture
def tiny_data(tmp_path):
    return make_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DERM_ML_CACHE", str(tmp_path / "cache"))
    import torch

    torch.set_num_threads(1)
