"""Progress reports, cancellation and the remaining-time estimate of a training run.

``progress`` receives dicts (stage, epoch, epochs, batch, batches, loss, eta_seconds,
images_per_second, elapsed_seconds, or an ``event``); ``should_stop()`` is polled between batches.
"""

from __future__ import annotations

import time
from collections import deque

from .errors import TrainingCancelled


def emit(progress, **kw) -> None:
    """Send one progress dict to ``progress`` (None: nobody listens)."""
    if progress is not None:
        progress(kw)


def check_stop(should_stop) -> None:
    """Raise TrainingCancelled when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training cancelled by request; no artefact was completed")


def eta_seconds(batches_low: int, batches_full: int, batch_size: int, speed: float, pixel_ratio: float = 1.0) -> float:
    """Seconds left of a stage: ``batches_low`` batches still at the progressive (low) resolution and
    ``batches_full`` at the full one, at ``speed`` images/s measured at the current resolution. While
    that is the low one (``pixel_ratio`` = low px^2 / full px^2 < 1), the full-size batches are
    estimated ``1 / pixel_ratio`` times slower, as the convolutions' work grows with the pixels
    (measured: 59.6 img/s at 160 px, 28.6 at 224 px, where the pixel ratio predicts 30.4)."""
    return (batches_low + batches_full / pixel_ratio) * batch_size / max(speed, 1e-9)


class RecentSpeed:
    """Images per second over the last ``window`` batches (fewer at first). The ETA uses it rather
    than the average since the stage or resolution began, which lags a load that changes: with another
    load on the CPU during a run's first epochs, the average overstates the time left once it ends."""

    def __init__(self, window: int, clock=time.time):
        self.clock = clock
        self.marks = deque(maxlen=max(1, window) + 1)  # (time, images counted so far)
        self.reset()

    def reset(self):
        """Start again (a new resolution: the old batches' speed says nothing about it)."""
        self.marks.clear()
        self.marks.append((self.clock(), 0))

    def add(self, images: int):
        self.marks.append((self.clock(), self.marks[-1][1] + images))

    def speed(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def member_progress(progress, k: int, n: int):
    """Progress of fine model k of n: adds member/members and extends the ETA over the members left,
    each as long as this one's time so far plus its ETA (so a progressive plan's slower full-size
    epochs and a changing load count as they do for this member; after a resume this member's time
    counts from the resume)."""
    if progress is None or n == 1:
        return progress

    def wrapped(d):
        d = {**d, "member": k + 1, "members": n}
        if d.get("eta_seconds") is not None and d.get("elapsed_seconds") is not None:
            d["eta_seconds"] += (n - 1 - k) * (d["elapsed_seconds"] + d["eta_seconds"])
        progress(d)

    return wrapped
