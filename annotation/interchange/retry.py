"""Retry a whole import while the embedded SQLite database is locked by another writer.

SQLite allows one writer at a time; a writer waiting longer than the connection's busy
timeout gets OperationalError "database is locked". Imports are safe to run again (boxes
of a file replace that annotator's boxes; a created case is found by its image name), so
the import is simply started over after a pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

T = TypeVar("T")


class DatabaseBusy(Exception):
    """The database stayed locked through every attempt, or failed otherwise; the message says what to do."""


def is_locked(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "locked" in str(exc).lower()


def run_retrying(
    fn: Callable[[], T], *, retries: int = 3, wait: float = 2.0, on_retry: Callable[[int, int], None] | None = None
) -> T:
    """fn() with up to `retries` further attempts while the database is locked; any database
    error left is raised as DatabaseBusy with a readable message (never a bare traceback)."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except OperationalError as exc:
            if is_locked(exc) and attempt < retries:
                if on_retry:
                    on_retry(attempt + 2, retries + 1)
                time.sleep(wait)
                continue
            if is_locked(exc):
                raise DatabaseBusy(
                    f"the database stayed locked by another writer through {retries + 1} attempt(s) "
                    f"({connection.vendor}: one writer at a time). Files already imported are kept; run the same "
                    "command again when the other import or training has finished (files are replaced, not "
                    "duplicated), or use PostgreSQL (DATABASE_URL) for concurrent writers."
                ) from exc
            raise DatabaseBusy(f"database error during the import: {exc}") from exc
    raise AssertionError("unreachable")
