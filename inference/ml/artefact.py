"""Model artefact directory: one directory holds everything ``predict`` needs.

Files: ``model.json`` (manifest, written last: its presence marks a complete artefact),
``taxonomy.json``, ``fine.safetensors`` [, ``fine_1.safetensors`` ... for an ensemble of fine
models, ``fine_members`` in the manifest], ``coarse.safetensors`` [, ``binary.safetensors``],
``ood.safetensors`` (per-class feature means), ``metrics.json`` [, ``int8.safetensors``: activation
ranges for int8 serving, ``quantize.py``] [, ``triage.json`` with ``heldout.safetensors`` and
``triage_ood.safetensors``: calibration, tier thresholds and the unfamiliar-photo detector,
``triage.py``; written by ``python -m inference.ml calibrate``].
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "model.json"
FORMAT_VERSION = 1


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except Exception:
        pass
    from . import __version__

    return "inference.ml " + __version__


def fine_file(member: int) -> str:
    """File name of fine model ``member`` (0: ``fine.safetensors``, k: ``fine_k.safetensors``)."""
    return "fine.safetensors" if member == 0 else f"fine_{member}.safetensors"


def save_state(model: torch.nn.Module, path) -> None:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path))


def load_state(path) -> dict:
    return load_file(str(path), device="cpu")


def write_atomic(path, write) -> None:
    """``write(binary file)`` into a temporary file of this writer alone beside ``path``, then move it
    to ``path``: readers see the old file or the whole new one, and two writers of one path (two
    trainings filling the same image cache) never share a temporary file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_manifest(model_dir) -> dict:
    p = Path(model_dir) / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(
            f"{model_dir}: no {MANIFEST} - not a complete model artefact (training unfinished or cancelled?)"
        )
    return json.loads(p.read_text(encoding="utf-8"))
