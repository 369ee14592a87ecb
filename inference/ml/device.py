"""Where the engine computes: ``--device auto|cpu|cuda[:N]`` (``DERM_ML_DEVICE`` for the portal's workers).

"auto" takes the first CUDA GPU when PyTorch sees one, else the CPU. On CUDA training runs in
automatic mixed precision (float16 with a gradient scaler) and channels-last memory; on the CPU nothing
changes. Artefacts are device-independent: weights are saved from CPU copies and load on either.
"""

from __future__ import annotations

import contextlib
import os

import torch

ENV = "DERM_ML_DEVICE"
CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device that does not exist here or is spelled wrong (names what was asked and what there is)."""


def resolve_device(spec: str | None = None) -> torch.device:
    """The ``torch.device`` of ``spec`` (None: ``DERM_ML_DEVICE``, else "auto")."""
    raw = spec if spec not in (None, "") else (os.environ.get(ENV) or "auto")
    s = str(raw).strip().lower()
    if s == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        idx = s.partition(":")[2]
        if idx and not idx.isdigit():
            raise DeviceError(f"device {raw!r}: the GPU index must be a whole number (choose {CHOICES})")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DeviceError(f"device {raw!r}: PyTorch sees no CUDA GPU on this machine; use cpu or auto")
        k = int(idx or 0)
        if k >= n:
            raise DeviceError(f"device {raw!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", k)
    source = "" if spec not in (None, "") else f" (from {ENV})"
    raise DeviceError(f"device {raw!r}{source} is unknown; choose {CHOICES}")


def autocast(device: torch.device):
    """Mixed precision on CUDA (float16); on the CPU a no-op, so CPU numbers stay as they were."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device):
    """The float16 gradient scaler on CUDA, None on the CPU."""
    return torch.amp.GradScaler("cuda") if device.type == "cuda" else None


def model_device(model) -> torch.device:
    """The device of a module's parameters (the CPU for a module without any)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
