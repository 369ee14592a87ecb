"""A real Celery worker against Redis.

Two workers are started exactly as `./run serve` does (one per queue, `celery -A
derm_portal worker -Q ...`), with a unique broker key prefix so parallel runs on one
Redis never see each other's messages. `derm_portal.ping` comes back through a Redis
result backend; and a job held open on the `long` queue does not delay a ping on
`interactive`. The workers are stopped at the end.

Skipped locally when Redis is not reachable; fails in CI (DERM_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from derm_portal.celery import app as portal_app
from tests.conftest import need
from tests.workers import BROKER, flush, new_prefix, portal_on_redis, redis_ok, start_worker, stop, worker_env


# Registered on the portal app only when a worker imports this module (`-I`): a job that
# runs until the test releases it, so "long does not block interactive" needs no timing.
@portal_app.task(name="tests.hold_until_released")
def hold_until_released(key: str, limit_s: float = 120.0) -> str:
    import redis

    r = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    r.set(f"{key}:started", "1", ex=600)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if r.get(f"{key}:release"):
            return "released"
        time.sleep(0.05)
    return "gave up"


def test_routes_send_training_to_long_and_predictions_to_interactive(settings):
    from celery import Celery

    app = Celery("derm-route-check", set_as_current=False)
    app.conf.task_routes = settings.CELERY_TASK_ROUTES
    app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE

    def queue_of(name):
        route = app.amqp.router.route({}, name)
        return route["queue"].name

    assert queue_of("inference.tasks.run_prediction") == "interactive"
    assert queue_of("inference.tasks.run_gradcam") == "interactive"
    assert queue_of("inference.tasks.run_training") == "long"
    assert queue_of("annotation.tasks.import_folder") == "long"
    assert queue_of("reports.tasks.export_study") == "long"
    assert queue_of("derm_portal.ping") == "interactive"  # default queue
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    assert {q.name for q in portal_app.conf.task_queues} == {"interactive", "long"}


def test_each_job_reaches_only_its_own_queue():
    """The portal's app puts a training job on `long` alone and a prediction on `interactive` alone
    (queues sharing an exchange and key would get both), read back from Redis with no worker running."""
    need(redis_ok(), "Redis is not reachable")
    import redis

    tag, prefix = new_prefix()
    r = redis.Redis.from_url(BROKER)
    try:
        with portal_on_redis(prefix) as app:
            app.send_task("inference.tasks.run_training", args=[0])
            app.send_task("inference.tasks.run_prediction", args=[0])
            app.send_task("derm_portal.ping", args=[1])
        queued = {
            q: [json.loads(m)["headers"]["task"] for m in r.lrange(f"{prefix}{q}", 0, -1)]
            for q in ("long", "interactive")
        }
    finally:
        flush(prefix)
    assert queued["long"] == ["inference.tasks.run_training"]
    assert sorted(queued["interactive"]) == ["derm_portal.ping", "inference.tasks.run_prediction"]


def _start_worker(queue: str, prefix: str, tag: str, log, name: str = "", extra_env: dict | None = None):
    env = worker_env(prefix, "derm_portal.settings.test", CELERY_RESULT_BACKEND=BROKER, **(extra_env or {}))
    return start_worker(queue, f"{name or queue}-{tag}", log, env, "-c", "1", "-I", "tests.test_celery_worker")


@pytest.mark.celery_worker
def test_real_workers_run_ping_and_long_jobs_do_not_block_interactive(tmp_path, settings):
    need(redis_ok(), "Redis is not reachable")
    import redis
    from celery import Celery

    tag = uuid.uuid4().hex[:10]
    prefix = f"derm-test-{tag}:"
    client = Celery("derm-test-client", broker=BROKER, backend=BROKER, set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    client.conf.task_routes = settings.CELERY_TASK_ROUTES
    client.conf.task_default_queue = "interactive"
    r = redis.Redis.from_url(BROKER)
    hold_key = f"derm-test-hold-{tag}"

    logs = {q: tmp_path / f"worker-{q}.log" for q in ("interactive", "long")}
    workers = {q: _start_worker(q, prefix, tag, logs[q]) for q in ("interactive", "long")}
    try:
        # 1. A ping on each queue comes back (this also waits for both workers to be up).
        first = client.send_task("derm_portal.ping", args=[41])
        assert first.get(timeout=120) == 42, logs["interactive"].read_text()[-2000:]
        on_long = client.send_task("derm_portal.ping", args=[1], queue="long")
        assert on_long.get(timeout=120) == 2, logs["long"].read_text()[-2000:]

        # 2. Hold the long worker busy; an interactive ping still finishes.
        held = client.send_task("tests.hold_until_released", args=[hold_key], queue="long")
        for _ in range(1200):
            if r.get(f"{hold_key}:started"):
                break
            time.sleep(0.05)
        assert r.get(f"{hold_key}:started"), logs["long"].read_text()[-2000:]
        quick = client.send_task("derm_portal.ping", args=[99])
        assert quick.get(timeout=60) == 100
        assert not held.ready()  # the long job was still running when the ping came back
        # and the long worker really was the one busy with it
        assert held.id in logs["long"].read_text()
        assert held.id not in logs["interactive"].read_text()
        assert quick.id in logs["interactive"].read_text()

        r.set(f"{hold_key}:release", "1", ex=600)
        assert held.get(timeout=60) == "released"
    finally:
        for proc in workers.values():
            stop(proc)
        r.delete(f"{hold_key}:started", f"{hold_key}:release")
        flush(prefix)
    assert all(proc.poll() is not None for proc in workers.values())


@pytest.mark.celery_worker
def test_a_job_whose_worker_died_is_run_again_by_another_worker(tmp_path, settings):
    """acks_late: the job is acknowledged only when it finishes, so when its worker is
    killed mid-job another worker runs it (after the broker's visibility timeout,
    shortened here to 3 s through CELERY_BROKER_TRANSPORT_OPTIONS)."""
    need(redis_ok(), "Redis is not reachable")
    import json

    import redis
    from celery import Celery

    tag = uuid.uuid4().hex[:10]
    prefix = f"derm-test-{tag}:"
    options = {"visibility_timeout": 3, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    extra = {"CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(options)}
    client = Celery("derm-test-client", broker=BROKER, backend=BROKER, set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": prefix, **options}
    r = redis.Redis.from_url(BROKER)
    hold_key = f"derm-test-hold-{tag}"
    logs = {n: tmp_path / f"worker-{n}.log" for n in ("first", "second")}
    first = _start_worker("long", prefix, tag, logs["first"], name="first", extra_env=extra)
    second = None
    try:
        held = client.send_task("tests.hold_until_released", args=[hold_key], queue="long")
        for _ in range(2400):
            if r.get(f"{hold_key}:started"):
                break
            time.sleep(0.05)
        assert r.get(f"{hold_key}:started"), logs["first"].read_text()[-2000:]
        stop(first, signal.SIGKILL)  # the worker dies in the middle of the job
        assert first.poll() is not None
        assert not held.ready()
        r.delete(f"{hold_key}:started")
        r.set(f"{hold_key}:release", "1", ex=600)  # the second run may finish at once
        second = _start_worker("long", prefix, tag, logs["second"], name="second", extra_env=extra)
        assert held.get(timeout=180) == "released", logs["second"].read_text()[-2000:]
        assert r.get(f"{hold_key}:started")  # it really ran again
        assert held.id in logs["second"].read_text()
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
        r.delete(f"{hold_key}:started", f"{hold_key}:release")
        flush(prefix)
