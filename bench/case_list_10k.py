"""Case list at 10,000 cases: time the HTML page and the API list with filters
(p50/p95 over 20 requests each) and count the SQL queries per request.

    .venv/bin/python bench/case_list_10k.py [--cases 10000] [--database-url URL] [--sqlite] [--keep]

A throw-away PostgreSQL database `derm_bench_cases_<pid>` is created on the server of
--database-url (default $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test) and
dropped at the end (--sqlite uses a temporary SQLite file instead). Rows are bulk-created
(no image files: the list never opens them). The query count must not depend on the page
size or the page number.

Measured on the 2-CPU dev machine while other jobs ran (load 7-10), PostgreSQL: every
request p50 27-114 ms, 8 queries per HTML page and 6 per API page whatever the page size
or number; SQLite: p50 27-79 ms. Page 200 used to cost 2.5x page 1 (80 vs 32 ms) and
API page 150 8x (93 vs 11 ms) because the per-row label/photo subqueries ran for every
row the OFFSET skipped; pages are now cut from ids first (selectors.case_rows).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

REPO = Path(__file__).resolve().parents[1]


def seed(n: int) -> None:
    from django.utils import timezone

    from annotation.models import Case, CaseStatus, DiagnosisLabel, LabelSource, Patient, Photo, SubClass
    from annotation.services import taxonomy_load_default

    rnd = random.Random(7)
    tax = taxonomy_load_default()
    subs = list(SubClass.objects.filter(taxonomy=tax))
    weights = {"nv": 70, "bkl": 10, "mel": 8, "bcc": 5, "akiec": 3, "vasc": 2, "df": 2}
    patients = Patient.objects.bulk_create(
        [
            Patient(code=f"PSN-{i:06d}", sex=rnd.choice(["female", "male"]), birth_year=rnd.randint(1930, 2010))
            for i in range(n // 2)
        ],
        batch_size=2000,
    )
    sites = ["back", "face", "trunk", "scalp", "upper extremity", "lower extremity", "abdomen", "chest"]
    now = timezone.now()
    cases = []
    for i in range(n):
        cases.append(
            Case(
                patient=patients[i % len(patients)],
                external_id=f"BENCH_{i:06d}",
                body_site=rnd.choice(sites),
                clinical_history="pigmented lesion, changing" if i % 7 == 0 else "",
                status=CaseStatus.OPEN,
            )
        )
    cases = Case.objects.bulk_create(cases, batch_size=2000)
    # spread creation times over two years so ordering by date is meaningful
    Case.objects.bulk_update(
        [Case(pk=c.pk, created_at=now - timezone.timedelta(minutes=105 * (n - i))) for i, c in enumerate(cases)],
        ["created_at"],
        batch_size=2000,
    )
    photos, labels = [], []
    for i, c in enumerate(cases):
        for k in range(1 + (i % 3)):
            sha = f"{i:032x}{k:032x}"
            photos.append(
                Photo(
                    case=c,
                    file=f"photos/{sha[:2]}/{sha}.jpg",
                    modality="dermoscopic" if (i + k) % 2 else "clinical",
                    width=600,
                    height=450,
                    sha256=sha,
                    original_name=f"img_{i}_{k}.jpg",
                )
            )
        if i % 10 == 9:
            continue  # 10% without any label
        code = rnd.choices(list(weights), weights=list(weights.values()))[0]
        sub = next(s for s in subs if s.code == code)
        source = (
            LabelSource.HISTOPATHOLOGY
            if rnd.random() < 0.4
            else rnd.choice([LabelSource.CONSENSUS, LabelSource.FOLLOW_UP])
        )
        labels.append(
            DiagnosisLabel(
                case=c, sub_class=sub, source=source, confirmed=source == LabelSource.HISTOPATHOLOGY, signed_at=now
            )
        )
        if source == LabelSource.HISTOPATHOLOGY and i % 4 == 0:  # some cases also carry an earlier clinical label
            labels.append(
                DiagnosisLabel(
                    case=c, sub_class=rnd.choice(subs), source=LabelSource.CLINICAL, confirmed=False, signed_at=now
                )
            )
    Photo.objects.bulk_create(photos, batch_size=5000)
    DiagnosisLabel.objects.bulk_create(labels, batch_size=5000)
    confirmed_ids = DiagnosisLabel.objects.filter(confirmed=True).values("case_id")
    Case.objects.filter(pk__in=confirmed_ids).update(status=CaseStatus.CONFIRMED)


def measure(client, url: str, repeat: int) -> tuple[float, float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    status = 0
    for i in range(repeat + 2):
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            response = client.get(url)
            _ = response.content
            dt = time.perf_counter() - t0
        status = response.status_code
        if i >= 2:  # two warm-up requests
            times.append(dt * 1000)
            queries = len(ctx.captured_queries)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], queries, status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the list query")
    args = ap.parse_args()

    var_dir = tempfile.mkdtemp(prefix="derm-bench-cases-")
    dbname = f"derm_bench_cases_{os.getpid()}"
    admin_url = None
    if args.sqlite:
        os.environ["DATABASE_URL"] = f"sqlite:///{var_dir}/bench.sqlite3"
    else:
        import psycopg

        server = urlparse(args.database_url)
        admin_url = urlunparse(server._replace(path="/" + (server.path.lstrip("/") or "postgres")))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        os.environ["DATABASE_URL"] = urlunparse(server._replace(path="/" + dbname))
    os.environ.update(
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

        from derm_portal import roles
        from tests.factories import UserFactory

        call_command("migrate", verbosity=0)
        t0 = time.perf_counter()
        seed(args.cases)
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("ANALYZE")
        print(
            f"{connection.vendor}: seeded {args.cases} cases in {time.perf_counter() - t0:.1f} s; CPUs {os.cpu_count()}"
        )
        user = UserFactory(username="bench-derm", role=roles.DERMATOLOGIST)
        client = Client()
        client.force_login(user)

        rows = [
            ("page  /cases/", "/cases/"),
            ("page  /cases/ page 200", "/cases/?page=200"),
            ("page  /cases/ last page", "/cases/?page=last"),
            ("page  status=confirmed", "/cases/?status=confirmed"),
            ("page  diagnosis=mel", "/cases/?diagnosis=mel"),
            ("page  confirmed=yes", "/cases/?confirmed=yes"),
            ("page  confirmed=no&modality=dermoscopic", "/cases/?confirmed=no&modality=dermoscopic"),
            ("page  q=PSN-0042", "/cases/?q=PSN-0042"),
            ("page  all filters", "/cases/?status=confirmed&diagnosis=mel&confirmed=yes&modality=dermoscopic"),
            ("api   /api/cases/", "/api/cases/?format=json"),
            ("api   page_size=10", "/api/cases/?format=json&page_size=10"),
            ("api   page_size=200", "/api/cases/?format=json&page_size=200"),
            ("api   page=150", "/api/cases/?format=json&page=150"),
            ("api   diagnosis=mel&confirmed=yes", "/api/cases/?format=json&diagnosis=mel&confirmed=yes"),
            ("api   status=open&modality=clinical", "/api/cases/?format=json&status=open&modality=clinical"),
            ("api   q=changing", "/api/cases/?format=json&q=changing"),
        ]
        print(f"{'request':44s} {'p50 ms':>8s} {'p95 ms':>8s} {'queries':>8s} {'status':>6s}")
        results = {}
        for name, url in rows:
            p50, p95, q, status = measure(client, url, args.repeat)
            results[name] = (p50, q)
            print(f"{name:44s} {p50:8.1f} {p95:8.1f} {q:8d} {status:6d}")
        page_q = {results[n][1] for n in results if n.startswith("page  /cases/")}
        api_q = {
            results[n][1] for n in ("api   /api/cases/", "api   page_size=10", "api   page_size=200", "api   page=150")
        }
        print(
            f"queries independent of page size/number: HTML {sorted(page_q)}  API {sorted(api_q)}  "
            f"-> {'OK' if len(page_q) == 1 and len(api_q) == 1 else 'GROWS'}"
        )
        worst = max(p for p, _ in results.values())
        print(
            f"RESULT cases={args.cases} worst_p50_ms={worst:.1f} html_p50_ms={results['page  /cases/'][0]:.1f} "
            f"api_p50_ms={results['api   /api/cases/'][0]:.1f}"
        )
        if args.explain:
            from annotation import selectors

            qs = selectors.case_list(user=user, diagnosis="mel", confirmed="yes")[:25]
            with connection.cursor() as cur:
                sql, params = qs.query.sql_with_params()
                cur.execute(
                    ("EXPLAIN ANALYZE " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN ") + sql, params
                )
                print("\n".join(str(r[0] if len(r) == 1 else r) for r in cur.fetchall()))
        connection.close()
    finally:
        if not args.keep:
            shutil.rmtree(var_dir, ignore_errors=True)
            if admin_url:
                import psycopg

                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        else:
            print(f"kept {dbname if admin_url else var_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
