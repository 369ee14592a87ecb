"""Real Celery workers for the tests about them: start one as `./run worker` does, against Redis
under a key prefix of its own (parallel runs on one Redis never see each other's messages), wait
for what it should do, and stop it. Workers share the test's PostgreSQL database and media."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROKER = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
if not BROKER.startswith("redis"):
    BROKER = "redis://127.0.0.1:6379/0"


def redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping())
    except Exception:
        return False


def db_url() -> str:
    """The test database as a DATABASE_URL for the worker processes."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def new_prefix() -> tuple[str, str]:
    """(tag, key prefix) unique to one test."""
    tag = uuid.uuid4().hex[:10]
    return tag, f"derm-test-{tag}:"


def worker_env(prefix: str | None = None, settings_module: str = "derm_portal.settings.base", **extra) -> dict:
    """The environment of a worker process that shares this test's database, media and models."""
    from django.conf import settings as dj_settings

    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE=settings_module,
        CELERY_BROKER_URL=BROKER,
        CELERY_TASK_ALWAYS_EAGER="0",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        DERM_INFERENCE_THREADS="1",
        DJANGO_LOG_LEVEL="WARNING",
    )
    if settings_module != "derm_portal.settings.test":
        env.update(
            DATABASE_URL=db_url(),
            DERM_MEDIA_ROOT=str(dj_settings.MEDIA_ROOT),
            DERM_MODEL_ROOT=str(dj_settings.DERM_MODEL_ROOT),
        )
    if prefix:
        env["CELERY_KEY_PREFIX"] = prefix
    env.update(extra)
    return env


def start_worker(queue: str, name: str, log: Path, env: dict, *args: str) -> subprocess.Popen:
    """`celery -A derm_portal worker -Q queue` (solo pool), logging to ``log``; extra CLI ``args``."""
    cmd = [sys.executable, "-m", "celery", "-A", "derm_portal", "worker", "-Q", queue, "-n", f"{name}@%h", "-P", "solo"]
    cmd += [*args, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def until(cond, timeout: float, what: str, log: Path | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def flush(prefix: str) -> None:
    """Delete the test's broker keys."""
    import redis

    r = redis.Redis.from_url(BROKER)
    for key in r.scan_iter(match=f"{prefix}*"):
        r.delete(key)


def fresh_connections(app) -> None:
    """Drop the app's cached broker connections and producers, so a changed broker_url or key prefix
    takes effect (kombu keeps both pools across conf updates)."""
    app._pool = None
    app.amqp._producer_pool = None


@contextlib.contextmanager
def portal_on_redis(prefix: str):
    """The portal's own Celery app sends its jobs to Redis under ``prefix`` (not eagerly) for the
    block, with fresh connections on the way in and out; its settings are restored afterwards."""
    from derm_portal.celery import app

    keys = ("task_always_eager", "broker_url", "broker_transport_options")
    saved = {k: app.conf[k] for k in keys}
    app.conf.update(task_always_eager=False, broker_url=BROKER, broker_transport_options={"global_keyprefix": prefix})
    fresh_connections(app)
    try:
        yield app
    finally:
        app.conf.update(saved)
        fresh_connections(app)
