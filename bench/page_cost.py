"""What one request of the busiest pages costs the server: SQL queries and render time (p50/p95 over
--repeat requests through Django's test client, no network, no gunicorn) of the case list, the
filtered lists that bench/load_pages.py requests, and case pages with few and many photos.

    nice .venv/bin/python bench/page_cost.py [--cases 2000] [--repeat 50] [--database-url URL]

A throw-away PostgreSQL database `derm_bench_pages_<pid>` is created on the server of --database-url
(default $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test), seeded like bench/case_list_10k.py
plus busy cases (tests/busy_case.py: photos with predictions, heat maps, boxes, labels, assessments)
and dropped at the end. A dermatologist requests every page (the load bench's users). The cache is the
configured one (per process unless DERM_CACHE_URL is set). Not a test: it prints numbers.
--sql PAGE prints a page's queries, --profile PAGE its cProfile.

Numbers: `load-pages` in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _scratch_db as scratch_db

REPO = Path(__file__).resolve().parents[1]


def pages(busy: dict[int, int], plain: int) -> list[tuple[str, str]]:
    from bench.load_pages import FILTERS

    rows = [("case list", "/cases/")]
    rows += [(f"list ?{f}", f"/cases/?{f}") for f in FILTERS]
    rows.append(("case page, 1-3 photos", f"/cases/{plain}/"))
    rows += [(f"case page, {n} busy photos", f"/cases/{pk}/") for n, pk in sorted(busy.items())]
    return rows


def measure(client, url: str, repeat: int) -> tuple[float, float, float, int, int]:
    """p50 and p95 wall ms and p50 CPU ms of this process over ``repeat`` requests after two warm-up
    ones, queries of the last, status. CPU ms leave out the database server and the time the process
    waited for a core, so they change little with the machine's load; wall ms follow the load."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, cpu, queries, status = [], [], 0, 0
    for i in range(repeat + 2):
        connection.queries_log.clear()  # the log keeps 9,000 queries: a long run would overflow it
        with CaptureQueriesContext(connection) as ctx:
            t0, c0 = time.perf_counter(), time.process_time()
            response = client.get(url)
            _ = response.content
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        status, queries = response.status_code, len(ctx.captured_queries)
        if i >= 2:
            times.append(dt * 1000)
            cpu.append(dc * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], statistics.median(cpu), queries, status


def profile(client, url: str, top: int = 30) -> None:
    """cProfile of 10 requests of ``url``: where a request's time goes."""
    import cProfile
    import pstats

    client.get(url)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(10):
        _ = client.get(url).content
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--profile", metavar="PAGE", help="profile this page (a name printed in the table) instead")
    ap.add_argument("--sql", metavar="PAGE", help="print the SQL queries of this page instead")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()

    var_dir = tempfile.mkdtemp(prefix="derm-bench-pages-")
    dbname = f"derm_bench_pages_{os.getpid()}"
    os.environ.update(
        DATABASE_URL=scratch_db.create(args.database_url, dbname),
        DERM_VAR_DIR=var_dir,
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DJANGO_DEBUG="0",
        DJANGO_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(REPO))
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        from annotation.models import Case
        from bench.case_list_10k import seed
        from derm_portal import roles
        from tests.busy_case import busy_case
        from tests.factories import UserFactory

        call_command("migrate", verbosity=0)
        seed(args.cases)
        busy = {n: busy_case(n).pk for n in (3, 12)}
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        user = UserFactory(username="bench-derm", role=roles.DERMATOLOGIST)
        client = Client()
        client.force_login(user)
        plain = Case.objects.order_by("pk").values_list("pk", flat=True)[args.cases // 2]
        if args.sql:
            from django.test.utils import CaptureQueriesContext

            client.get(dict(pages(busy, plain))[args.sql])
            with CaptureQueriesContext(connection) as ctx:
                client.get(dict(pages(busy, plain))[args.sql])
            for k, q in enumerate(ctx.captured_queries, 1):
                print(f"{k:3d} {q['time']:>6s}s {q['sql'][:600]}")
            return 0
        if args.profile:
            profile(client, dict(pages(busy, plain))[args.profile])
            return 0
        print(f"{connection.vendor}: {args.cases} cases; {args.repeat} requests a page; load {os.getloadavg()[0]:.1f}")
        print(f"{'page':48s} {'queries':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'cpu ms':>8s} {'status':>6s}")
        t0 = time.perf_counter()
        for name, url in pages(busy, plain):
            p50, p95, cpu, q, status = measure(client, url, args.repeat)
            print(f"{name:48s} {q:7d} {p50:8.1f} {p95:8.1f} {cpu:8.1f} {status:6d}")
        print(f"total {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.1f}")
        connection.close()
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
        scratch_db.drop(args.database_url, dbname)
    return 0


if __name__ == "__main__":
    sys.exit(main())
