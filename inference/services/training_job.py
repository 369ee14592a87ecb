"""Running one training run in a worker, step by step: claim the run, export its cases, train with
progress and cancellation, register the artefact as a candidate ModelVersion.

A failed or cancelled run registers nothing and removes its partial artefact. A redelivered job (its
worker died) takes the run over once the heartbeat is older than TRAINING_STALE, and resumes from the
engine's checkpoints in the same artefact directory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inference.ml.errors import SplitError, TrainingCancelled

from .. import loader
from ..models import ModelVersion, TrainingRun, TrainingStatus
from .registry import model_register
from .training import ALLOWED_CONFIG_KEYS, training_data_export

log = logging.getLogger(__name__)

# A training run whose worker has not reported progress for this long is taken over by a redelivered job.
TRAINING_STALE = timedelta(seconds=int(getattr(settings, "DERM_TRAINING_STALE_SECONDS", 900)))
MIN_CASES, MIN_CLASSES = 4, 2


def _run_update(run_pk: int, **fields) -> None:
    TrainingRun.objects.filter(pk=run_pk).update(**fields)


def _log_append(run_pk: int, line: str) -> None:
    run = TrainingRun.objects.only("log").get(pk=run_pk)
    stamp = timezone.now().strftime("%H:%M:%S")
    _run_update(run_pk, log=(run.log + f"[{stamp}] {line}\n")[-20000:])


def _claim(run_pk: int) -> tuple[TrainingRun | None, str]:
    """Lock the run and mark it running for this attempt, or say why not: missing, skipped-<status>
    (finished), busy (a live worker trains it) or cancelled (cancelled before it started)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_pk).first()
        if run is None:
            return None, "missing"
        if run.is_finished:
            return None, f"skipped-{run.status}"
        now = timezone.now()
        if run.status == TrainingStatus.RUNNING and run.heartbeat_at and run.heartbeat_at > now - TRAINING_STALE:
            return None, "busy"  # a duplicate message while a live worker trains (broker visibility timeout)
        if run.cancel_requested:
            run.status, run.finished_at = TrainingStatus.CANCELLED, now
            run.save(update_fields=["status", "finished_at"])
            return None, "cancelled"
        if run.status == TrainingStatus.RUNNING:
            log.warning("training run %s: taking over from a dead worker (last heartbeat %s)", run.pk, run.heartbeat_at)
        run.status, run.started_at, run.heartbeat_at = TrainingStatus.RUNNING, now, now
        run.attempts += 1
        run.progress = {"stage": "export"}
        run.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "progress"])
    return run, "claimed"


class RunReporter:
    """The engine's ``progress`` and ``should_stop`` callbacks for one run: progress is written to the
    run (with the heartbeat) at most about once a second, on every stage change and on events; the
    cancellation flag is read at most once a second."""

    def __init__(self, run_pk: int):
        self.run_pk = run_pk
        self.merged: dict = {}  # the last epoch / loss stay visible through evaluation
        self._stage = None
        self._cancel = False
        self._last_write = self._last_check = 0.0

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._cancel = TrainingRun.objects.filter(pk=self.run_pk, cancel_requested=True).exists()
        return self._cancel

    def __call__(self, d: dict) -> None:
        now = time.monotonic()
        stage_changed = d.get("stage") != self._stage
        if stage_changed:
            self._stage = d.get("stage")
            _log_append(self.run_pk, f"stage {d.get('stage')}")
        clean = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if stage_changed:
            clean.setdefault("eta_seconds", None)
            clean.setdefault("batch", None)
        self.merged.update(clean)
        if d.get("message"):
            _log_append(self.run_pk, d["message"])
        if stage_changed or d.get("event") or now - self._last_write >= 1.0:
            self._last_write = now
            _run_update(
                self.run_pk,
                progress={**self.merged, "updated": timezone.now().isoformat()},
                heartbeat_at=timezone.now(),
            )
            if d.get("event") == "epoch_end":
                self._log_epoch(d)

    def _log_epoch(self, d: dict) -> None:
        member = f" model {d['member']}/{d['members']}" if d.get("members", 1) > 1 else ""
        _log_append(
            self.run_pk,
            f"{d.get('stage')}{member} epoch {d.get('epoch')}/{d.get('epochs')}: loss "
            f"{d.get('loss', float('nan')):.4f} ({d.get('seconds', 0):.1f} s)",
        )


def _scratch_dir(run_pk: int) -> Path:
    root = Path(getattr(settings, "VAR_DIR", tempfile.gettempdir())) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"training-{run_pk}-", dir=root))


def _artefact_out(run: TrainingRun) -> Path:
    # deterministic per run: a redelivered job resumes from the engine's checkpoints there
    return loader.model_root() / f"run-{run.pk}-{run.created_at:%Y%m%d-%H%M%S-%f}"


def _export_step(run: TrainingRun, work: Path) -> dict:
    """The run's cases as the engine's data folder in ``work``; refuses too little data."""
    info = training_data_export(run=run, dest=work)
    _run_update(run.pk, n_cases=info["n_cases"], n_photos=info["n_photos"])
    _log_append(run.pk, f"exported {info['n_photos']} photos of {info['n_cases']} cases; classes {info['classes']}")
    if len(info["classes"]) < MIN_CLASSES or info["n_cases"] < MIN_CASES:
        raise ValueError(
            f"Not enough data to train: {info['n_cases']} cases, classes {info['classes']} "
            f"(need at least {MIN_CASES} cases and {MIN_CLASSES} diagnoses)."
        )
    _log_append(
        run.pk, "cases per diagnosis: " + ", ".join(f"{c} {n}" for c, n in sorted(info["cases_per_class"].items()))
    )
    return info


def _train_step(run: TrainingRun, work: Path, out: Path, info: dict, reporter: RunReporter) -> None:
    """The engine's training on the exported folder, writing the artefact to ``out``."""
    from inference.ml import train as engine

    cfg = engine.TrainConfig(
        data=str(work),
        taxonomy=info["taxonomy"],
        out=str(out),
        cache_dir="",
        **{k: v for k, v in run.config.items() if k in ALLOWED_CONFIG_KEYS},
    )
    try:
        engine.train(cfg, progress=reporter, should_stop=reporter.should_stop)
    except SplitError as exc:  # the engine's case-grouped stratified hold-out split
        raise ValueError(
            "Too few photos per diagnosis for a held-out test split by case (about 1 case in 5 is held out). "
            f"Label more cases or widen the label sources. ({exc})"
        ) from exc
    if reporter.should_stop():
        raise TrainingCancelled("cancelled")


def _register_step(run: TrainingRun, out: Path, reporter: RunReporter) -> ModelVersion:
    """The artefact as a candidate ModelVersion, and the run marked succeeded, in one transaction."""
    with transaction.atomic():
        name = run.name or f"Run {run.pk} ({', '.join(run.label_sources)})"
        mv = model_register(model_dir=out, name=name, created_by=run.created_by)
        _run_update(
            run.pk,
            status=TrainingStatus.SUCCEEDED,
            model_version=mv,
            finished_at=timezone.now(),
            progress={**reporter.merged, "stage": "done", "eta_seconds": None, "model_version": mv.pk},
        )
    _log_append(run.pk, f"registered candidate model version {mv.pk}")
    return mv


def _finish_cancelled(run_pk: int, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    _run_update(run_pk, status=TrainingStatus.CANCELLED, finished_at=timezone.now(), progress={"stage": "cancelled"})
    _log_append(run_pk, "cancelled on request; nothing was registered")


def _finish_failed(run_pk: int, out: Path, exc: Exception) -> None:
    shutil.rmtree(out, ignore_errors=True)
    _run_update(
        run_pk,
        status=TrainingStatus.FAILED,
        finished_at=timezone.now(),
        error=f"{type(exc).__name__}: {exc}"[:4000],
        progress={"stage": "failed"},
    )
    _log_append(run_pk, f"failed: {type(exc).__name__}: {exc}")


def _cancelled_errors() -> tuple[type, ...]:
    from inference.ml import train as engine

    # train.py's own TrainingCancelled, where it is not yet errors.TrainingCancelled, is the same signal
    return (TrainingCancelled, getattr(engine, "TrainingCancelled", TrainingCancelled))


def training_run_execute(*, run_pk: int) -> str:
    """Run one training job to the end. Returns succeeded, cancelled or failed, or why it did not run
    (missing, skipped-<status>, busy, cancelled)."""
    run, state = _claim(run_pk)
    if run is None:
        return state
    work, out = _scratch_dir(run_pk), _artefact_out(run)
    reporter = RunReporter(run_pk)
    try:
        info = _export_step(run, work)
        _train_step(run, work, out, info, reporter)
        _register_step(run, out, reporter)
        return "succeeded"
    except _cancelled_errors():
        _finish_cancelled(run_pk, out)
        return "cancelled"
    except Exception as exc:
        log.exception("training run %s failed", run_pk)
        _finish_failed(run_pk, out, exc)
        return "failed"
    finally:
        shutil.rmtree(work, ignore_errors=True)
