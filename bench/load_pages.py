"""Load on the production server: logged-in users browse the case list, a filtered list or a case page,
each request followed by 3 s of reading, for a fixed time; p50/p95/p99 per page, requests/s, errors and
the memory of each gunicorn worker.

    .venv/bin/python bench/load_pages.py [--users 200] [--seconds 60] [--cases 10000] [--workers 2]
                                         [--database-url URL] [--redis-url URL]

A throw-away PostgreSQL database `derm_bench_load_<pid>` is created on the server of --database-url
(default $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test), migrated and seeded with --cases cases
(bench/case_list_10k.seed: photos without files, labels) plus --busy-cases cases of three photos each with
the active model's prediction, heat map, two annotators' boxes and an assessment (tests/busy_case.py; half
of the case pages requested are these), and --users dermatologists with a session each,
then `./run prod` (gunicorn, production settings, Redis cache and broker from --redis-url) serves it on a
free loopback port. Each simulated user opens a fresh connection per request (gunicorn's sync workers
close it), so the numbers include connection set-up; the load generator runs on the same machine.
The database is dropped at the end. Not a test: it prints numbers (compare them with `uptime`'s load).

Numbers and their conditions: `load-pages` in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _scratch_db as scratch_db

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
THINK_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(n_cases: int, n_users: int, n_busy: int) -> tuple[list[str], list[int], list[int]]:
    """Seed cases and users; one session cookie per user, the case ids to visit and the busy ones."""
    import django

    django.setup()
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Case
    from bench.case_list_10k import seed
    from derm_portal import roles

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    seed(n_cases)
    from tests.busy_case import busy_case

    busy_ids = [busy_case(3).pk for _ in range(n_busy)]
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    User = get_user_model()
    proto = User(username="proto")
    proto.set_password("bench-password-not-used")
    users = User.objects.bulk_create([User(username=f"bench-{i:04d}", password=proto.password) for i in range(n_users)])
    Group.objects.get(name=roles.DERMATOLOGIST).user_set.add(*users)
    store = import_module(settings.SESSION_ENGINE).SessionStore
    backend = next(b for b in settings.AUTHENTICATION_BACKENDS if b.endswith("ModelBackend"))  # not axes
    cookies = []
    for u in users:
        s = store()
        s[SESSION_KEY], s[BACKEND_SESSION_KEY] = str(u.pk), backend
        s[HASH_SESSION_KEY] = u.get_session_auth_hash()
        s.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={s.session_key}")
    case_ids = list(Case.objects.values_list("pk", flat=True))
    print(
        f"seeded {n_cases} cases ({len(busy_ids)} busy) and {n_users} users with sessions "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return cookies, case_ids, busy_ids


FILTERS = [
    "status=confirmed",
    "diagnosis=mel",
    "confirmed=yes",
    "confirmed=no&modality=dermoscopic",
    "q=PSN-0042",
    "diagnosis=nv&modality=clinical",
    "page=20",
    "status=confirmed&diagnosis=bcc",
]


def pick(rnd: random.Random, case_ids: list[int], busy_ids: list[int]) -> tuple[str, str]:
    r = rnd.random()
    if r < 1 / 3:
        return "case list", "/cases/"
    if r < 2 / 3:
        return "filtered list", "/cases/?" + rnd.choice(FILTERS)
    if busy_ids and rnd.random() < 0.5:
        return "busy case page", f"/cases/{rnd.choice(busy_ids)}/"
    return "case page", f"/cases/{rnd.choice(case_ids)}/"


async def get(port: int, path: str, cookie: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nX-Forwarded-Proto: https\r\n"
                "Connection: close\r\nAccept: text/html\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # the server closes the connection after the body
        return int(status_line.split()[1])
    finally:
        writer.close()


async def user(port, cookie, case_ids, busy_ids, seed_, until, times, errors):
    rnd = random.Random(seed_)
    await asyncio.sleep(rnd.uniform(0, THINK_S))  # users arrive spread over one think time
    while time.monotonic() < until:
        name, path = pick(rnd, case_ids, busy_ids)
        t0 = time.perf_counter()
        try:
            status = await get(port, path, cookie)
        except OSError as exc:
            status = f"{type(exc).__name__}"
        dt = time.perf_counter() - t0
        if status == 200:
            times.setdefault(name, []).append(dt)
        else:
            errors[f"{name} {status}"] = errors.get(f"{name} {status}", 0) + 1
        await asyncio.sleep(THINK_S)


def worker_memory(master_pid: int) -> list[tuple[int, float, float]]:
    """(pid, RSS MB, peak RSS MB) of each gunicorn worker (children of the master)."""
    out = []
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            status = (pid / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master_pid):
            kb = lambda k, fields=fields: int(fields.get(k, "0 kB").split()[0]) / 1024  # noqa: E731
            out.append((int(pid.name), kb("VmRSS"), kb("VmHWM")))
    return sorted(out)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--busy-cases", type=int, default=300, help="cases with predicted, annotated photos")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--redis-url", default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()

    dbname = f"derm_bench_load_{os.getpid()}"
    db_url = scratch_db.create(args.database_url, dbname)
    var_dir = tempfile.mkdtemp(prefix="derm-bench-load-")
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        DERM_VAR_DIR=var_dir,
        DJANGO_SECRET_KEY="bench-" + os.urandom(24).hex(),
        CELERY_BROKER_URL=args.redis_url,
        DERM_CACHE_KEY_PREFIX=f"derm-bench-{os.getpid()}",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_LOG_LEVEL="WARNING",
        DERM_WEB_WORKERS=str(args.workers),
        DERM_BIND=f"127.0.0.1:{port}",
    )
    os.environ.update(
        {k: env[k] for k in ("DATABASE_URL", "DERM_VAR_DIR", "DJANGO_SECRET_KEY", "CELERY_BROKER_URL")},
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DJANGO_DEBUG="0",
        DJANGO_LOG_LEVEL="WARNING",
    )
    proc = None
    try:
        cookies, case_ids, busy_ids = prepare(args.cases, args.users, args.busy_cases)
        log = open(Path(var_dir) / "gunicorn.log", "wb")
        proc = subprocess.Popen(
            ["./run", "prod", "--access-logfile", "/dev/null"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if asyncio.run(get(port, "/healthz", "")) == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            print((Path(var_dir) / "gunicorn.log").read_text()[-3000:])
            return 1
        times: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        load0 = os.getloadavg()

        async def run_all():
            until = time.monotonic() + args.seconds
            await asyncio.gather(
                *(user(port, cookies[i], case_ids, busy_ids, i, until, times, errors) for i in range(args.users))
            )

        t0 = time.monotonic()
        asyncio.run(run_all())
        wall = time.monotonic() - t0
        load1 = os.getloadavg()
        total = sum(len(v) for v in times.values())
        print(
            f"{args.users} users, {args.seconds:.0f} s, think {THINK_S:.0f} s, gunicorn -w {args.workers}, "
            f"{args.cases} cases; load average {load0[0]:.1f} before, {load1[0]:.1f} after, CPUs {os.cpu_count()}"
        )
        print(f"{'page':16} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for name in ("case list", "filtered list", "case page", "busy case page"):
            xs = times.get(name, [])
            if xs:
                print(f"{name:16} {len(xs):6d} {pct(xs, 50):8.0f} {pct(xs, 95):8.0f} {pct(xs, 99):8.0f}")
        every = [x for v in times.values() for x in v]
        if every:
            print(f"{'all':16} {len(every):6d} {pct(every, 50):8.0f} {pct(every, 95):8.0f} {pct(every, 99):8.0f}")
        print(f"requests/s {total / wall:.1f}; errors {sum(errors.values())} {errors or ''}")
        for pid, rss, peak in worker_memory(proc.pid):
            print(f"gunicorn worker {pid}: RSS {rss:.0f} MB, peak {peak:.0f} MB")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from django.db import connections

        connections.close_all()
        scratch_db.drop(args.database_url, dbname)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
