"""Retrying a short write transaction when the database reports a lock conflict.

The embedded SQLite database allows one writer at a time: a recompute writing while the web app
writes gets "database is locked" once SQLite's own busy timeout runs out. PostgreSQL can report a
deadlock or a serialisation failure. Such errors are transient: the whole transaction is run again
after a growing pause (the caller's transaction must start inside ``fn`` so a retry starts clean).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import OperationalError

log = logging.getLogger(__name__)

LOCK_RETRIES = int(getattr(settings, "DERM_DB_LOCK_RETRIES", 8))
LOCK_BACKOFF_S = float(getattr(settings, "DERM_DB_LOCK_BACKOFF_SECONDS", 0.05))
LOCK_BACKOFF_MAX_S = 2.0
_LOCK_WORDS = ("database is locked", "database table is locked", "deadlock detected", "could not serialize access")


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(w in str(exc).lower() for w in _LOCK_WORDS)


def with_lock_retry(fn, *, what: str = "write", retries: int | None = None):
    """``fn()``, run again after 0.05, 0.1, 0.2 ... s (at most 2 s each) while it fails with a lock error;
    the last lock error is raised when ``retries`` more attempts fail too."""
    retries = LOCK_RETRIES if retries is None else retries
    for attempt in range(retries + 1):
        try:
            return fn()
        except OperationalError as exc:
            if not is_lock_error(exc) or attempt == retries:
                raise
            pause = min(LOCK_BACKOFF_MAX_S, LOCK_BACKOFF_S * 2**attempt)
            log.warning("%s: %s; retry %d of %d in %.2f s", what, exc, attempt + 1, retries, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")
