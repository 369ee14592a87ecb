"""A tiny trained model (tiny backbone, 32 px generated images, HAM10000 taxonomy) shared by the
session, and helpers to register/activate it in a test database."""

import csv
import shutil

import numpy as np
import pytest
import torch

from annotation.defaults import HAM10000_TAXONOMY

TINY = dict(
    backbone="tiny", pretrained=False, image_size=32, epochs=2, coarse_epochs=1, batch_size=8, cache_dir="", threads=1
)
HAM_COLOURS = {
    "nv": (120, 70, 40),
    "mel": (30, 20, 20),
    "akiec": (200, 90, 90),
    "bcc": (230, 180, 190),
    "bkl": (150, 120, 60),
    "df": (170, 110, 90),
    "vasc": (190, 20, 60),
}


def make_ham_like(root, n_per_class=6, size=40, seed=0):
    """Generated 'lesions': a coloured disc per class on noisy skin, 2 photos per case."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, k = [], 0
    for label, colour in HAM_COLOURS.items():
        for i in range(n_per_class):
            img = np.full((size, size, 3), (205, 160, 140), np.float32) + rng.normal(0, 12, (size, size, 3))
            yy, xx = np.mgrid[:size, :size]
            r = size * rng.uniform(0.2, 0.3)
            m = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r
            img[m] = np.array(colour, np.float32) + rng.normal(0, 10, (int(m.sum()), 3))
            name = f"img_{k:04d}.jpg"
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / name)
            rows.append((name, label, f"case_{label}_{i // 2}"))
            k += 1
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "case_id"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Trained once per session (a few seconds); copy it before changing anything."""
    from inference.ml.train import TrainConfig, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-model")
    data = make_ham_like(root / "data")
    return train(
        TrainConfig(data=str(data), taxonomy=dict(HAM10000_TAXONOMY), out=str(root / "model"), triage=False, **TINY)
    )


@pytest.fixture
def model_copy(tiny_model_dir, settings, tmp_path):
    """A fresh copy of the tiny artefact inside DERM_MODEL_ROOT (relative artefact_path)."""
    from pathlib import Path

    settings.DERM_MODEL_ROOT = str(tmp_path / "models")
    dest = Path(settings.DERM_MODEL_ROOT) / "tiny"
    shutil.copytree(tiny_model_dir, dest)
    return dest


@pytest.fixture
def active_model(db, taxonomy, model_copy, users):
    from inference import loader, services

    loader.cache_clear()
    mv = services.model_register(model_dir=model_copy, name="tiny test model", created_by=users["admin"])
    return services.model_activate(model_version=mv, by=users["admin"], reason="tiny test model (6 photos a class)")


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)
    yield
