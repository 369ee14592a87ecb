"""Int8 calibration of an existing artefact (the ``calibrate`` command).

Sits above predict.py and quantize.py: it loads the artefact with ``Predictor`` and stores the
activation ranges that ``quantize.quantized`` rebuilds the int8 models from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from . import artefact as art
from .cache import build_cache
from .errors import DataError
from .evaluate import artefact_records
from .predict import Predictor
from .quantize import FILE, calibrate_models


def calibrate_artefact(model_dir, data_dir, n_images: int = 256, seed: int = 0) -> dict:
    """Add (or replace) the int8 calibration of an artefact, from photos of ``data_dir``.

    When ``data_dir`` is the artefact's training data (same fingerprint) only its training split is
    used, so the held-out evaluation stays untouched; otherwise any of its photos. Returns the
    manifest entry written."""
    model_dir = Path(model_dir)
    P = Predictor.load(model_dir, precision="fp32")
    records, scope, _ = artefact_records(P, data_dir, "train")
    source = "training split" if scope == "training split" else "photos of another directory"
    if not records:
        raise DataError(f"{data_dir}: no photos with labels of this model's taxonomy to calibrate on")
    pick = np.sort(np.random.default_rng(seed).permutation(len(records))[:n_images])
    images, ok, _ = build_cache([records[i] for i in pick], P.size, None, colour=P.colour)
    images = images[torch.as_tensor(np.flatnonzero(ok))]
    flat = calibrate_models(P.fine_models, P.coarse_model, images, P.mean, P.std, P.size)
    art.write_atomic(model_dir / FILE, lambda f: f.write(safetensors_bytes(flat)))
    entry = {"file": FILE, "images": int(len(images)), "source": source}
    art.write_json(model_dir / art.MANIFEST, {**P.manifest, "int8_calibration": entry})
    return entry
