"""Rows every user sees alike (the default taxonomy, its classes, the active model), kept in the
configured cache (Redis in production, shared by every process) so busy pages do not read them again
on every request. Nothing per user or per role is kept here: pages still check permissions per request.

Every entry carries one generation number; ``changed()`` (on save/delete of such rows, and after the
queryset updates that skip signals) starts a new generation, retiring every entry at once. TTL bounds how
long a change made where no signal fires (another process with a per-process cache) can go unseen."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache
from django.db import transaction

log = logging.getLogger(__name__)
T = TypeVar("T")
TTL = 60  # seconds
_GEN = "shared-rows:generation"
_MISSING = object()


def _generation() -> int:
    gen = cache.get(_GEN)
    if gen is None:
        cache.add(_GEN, time.time_ns(), None)
        gen = cache.get(_GEN, 0)
    return gen


def shared(name: str, compute: Callable[[], T]) -> T:
    """The cached value of ``name`` (computed and stored on a miss). With the cache unreachable (Redis
    down) the value is read from the database, as without a cache: pages keep working."""
    try:
        key = f"shared-rows:{_generation()}:{name}"
        value = cache.get(key, _MISSING)
    except Exception as exc:
        log.warning("shared cache unavailable (%s); reading %s from the database", exc, name)
        return compute()
    if value is _MISSING:
        value = compute()
        try:
            cache.set(key, value, TTL)
        except Exception as exc:
            log.warning("shared cache unavailable (%s); %s not stored", exc, name)
    return value


def retire_all() -> None:
    """Start a new generation: every cached entry is retired."""
    try:
        try:
            cache.incr(_GEN)
        except ValueError:  # no generation yet (or evicted): any new one retires the old entries
            cache.set(_GEN, time.time_ns(), None)
    except Exception as exc:  # cache down: its entries are unreadable too; TTL bounds what it keeps
        log.warning("shared cache unavailable (%s); its entries expire within %d s", exc, TTL)


def changed(*args, **kwargs) -> None:
    """A shared row changed (usable as a signal receiver): now, and again once the transaction commits,
    so a request that read the old row before the commit cannot keep it cached."""
    retire_all()
    transaction.on_commit(retire_all)
