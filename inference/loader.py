"""Where artefacts live and the per-process Predictor cache.

A worker process loads each model version once (first task that needs it) and keeps it; the cache
is keyed by ModelVersion pk and artefact directory (a reused pk never serves another artefact) and holds at most ``MAX_CACHED`` predictors (the active one and the one
before it, during a switch-over).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from django.conf import settings

MAX_CACHED = 2
_cache: OrderedDict[tuple[int, str], object] = OrderedDict()
_lock = threading.Lock()


def model_root() -> Path:
    return Path(settings.DERM_MODEL_ROOT)


def artefact_dir(model_version) -> Path:
    p = Path(model_version.artefact_path)
    return p if p.is_absolute() else model_root() / p


def artefact_present(model_version) -> bool:
    """True when the model's artefact (its model.json) is on this server."""
    return (artefact_dir(model_version) / "model.json").is_file()


def stored_artefact_path(model_dir) -> str:
    """The value for ModelVersion.artefact_path: relative to DERM_MODEL_ROOT when inside it."""
    p = Path(model_dir).resolve()
    try:
        return str(p.relative_to(model_root().resolve()))
    except ValueError:
        return str(p)


def predictor_for(model_version):
    """The loaded inference.ml Predictor for a model version (cached per process)."""
    from inference.ml.predict import Predictor

    key = (model_version.pk, str(artefact_dir(model_version)))
    with _lock:
        pred = _cache.get(key)
        if pred is not None:
            _cache.move_to_end(key)
            return pred
    threads = getattr(settings, "DERM_INFERENCE_THREADS", None)
    pred = Predictor.load(key[1], threads=threads)
    with _lock:
        _cache[key] = pred
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED:
            _cache.popitem(last=False)
    return pred


def cache_clear() -> None:
    with _lock:
        _cache.clear()


def cached_versions() -> list[int]:
    with _lock:
        return [pk for pk, _ in _cache]
