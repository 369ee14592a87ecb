"""Benchmark: results of a reader study with 30 readers x 200 cases (simulated readings, plus a
simulated model score per case and an AI-aided second session): time the results computation and
the results page render. Target: < 2 s.

    .venv/bin/python bench/reader_study_results.py [--readers 30 --cases 200 --repeat 5]

Runs in a throw-away SQLite database under a temporary DERM_VAR_DIR unless DATABASE_URL is set
(then that database is used as is: point it at a scratch database).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readers", type=int, default=30)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-aided", action="store_true")
    ap.add_argument(
        "--confidence",
        default="five",
        choices=["five", "none"],
        help="none: yes/no readers (adds the fair comparison at the readers' operating point)",
    )
    ap.add_argument("--profile", action="store_true", help="print where the results computation spends its time")
    ap.add_argument(
        "--incomplete",
        type=int,
        default=0,
        help="this many readers skip 10%% of their cases (the analysis switches to jackknife covariances)",
    )
    args = ap.parse_args()
    if not os.environ.get("DATABASE_URL"):
        os.environ["DERM_VAR_DIR"] = tempfile.mkdtemp(prefix="bench-reader-study-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.base")
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings as dj_settings

    # set-up only: 30 reader accounts hashed with the production hasher take minutes on a busy machine
    dj_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)

    import numpy as np

    from annotation.models import Case, DiagnosisLabel, Patient, SubClass
    from annotation.services import taxonomy_load_default
    from derm_portal import roles
    from reports import services
    from reports.demo import fake_model_probs, write_simulated_readings
    from reports.models import StudyCase, StudyReader, StudyStatus
    from reports.results import reader_study_results
    from reports.simulate import simulate_binary
    from tests.factories import UserFactory

    t0 = time.perf_counter()
    tax = taxonomy_load_default()
    subs = {s.code: s for s in SubClass.objects.filter(taxonomy=tax)}
    coord = UserFactory(username=f"bench-coord-{time.time_ns()}", role=roles.COORDINATOR)
    sim = simulate_binary(args.cases, args.readers, seed=42)
    tag = time.time_ns()
    patients = Patient.objects.bulk_create([Patient(code=f"B{tag}-{i}") for i in range(args.cases)])
    cases = Case.objects.bulk_create(
        [Case(patient=p, external_id=f"B{tag}-{i}", status="confirmed") for i, p in enumerate(patients)]
    )
    negatives = ["nv", "bkl", "df", "vasc", "bcc", "akiec"]
    truth = ["mel" if sim["y"][i] else negatives[i % len(negatives)] for i in range(args.cases)]
    DiagnosisLabel.objects.bulk_create(
        [
            DiagnosisLabel(case=c, sub_class=subs[truth[i]], source="histopathology", confirmed=True)
            for i, c in enumerate(cases)
        ]
    )
    from inference.models import ModelVersion

    mv = ModelVersion.objects.create(name="bench model", taxonomy=tax, artefact_path=f"bench/{tag}")
    study = services.study_create(
        title="Bench study",
        taxonomy=tax,
        created_by=coord,
        positive_codes=["mel"],
        confidence_scale=args.confidence,
        model_version=mv,
        aided_session=not args.no_aided,
    )
    import random

    rng = random.Random(1)
    StudyCase.objects.bulk_create(
        [
            StudyCase(
                study=study,
                case=c,
                number=i + 1,
                truth_sub_class=subs[truth[i]],
                model_probs=fake_model_probs(
                    subs=list(subs), truth=truth[i], score_pos=float(sim["model"][i]), positive={"mel"}, rng=rng
                ),
                model_source="simulated",
            )
            for i, c in enumerate(cases)
        ]
    )
    readers = []
    for j in range(args.readers):
        u = UserFactory(username=f"bench-r{j}-{tag}", role=roles.READER)
        readers.append(StudyReader.objects.create(study=study, user=u, experience=sim["experience"][j], seed=j))
    study.status = StudyStatus.OPEN
    study.save(update_fields=["status"])
    study.refresh_from_db()
    n = write_simulated_readings(study=study, readers=readers, sim=sim, aided=not args.no_aided)
    if args.confidence == "none":
        from reports.models import Reading

        Reading.objects.filter(study_reader__study=study).update(confidence=None)
    if args.incomplete:
        from reports.models import Reading

        skip = [sc.pk for sc in StudyCase.objects.filter(study=study).order_by("number")][::10]
        n -= Reading.objects.filter(study_reader__in=readers[: args.incomplete], study_case_id__in=skip).delete()[0]
    study.refresh_from_db()
    print(
        f"set-up: {args.readers} readers x {args.cases} cases, {n} readings stored in {time.perf_counter() - t0:.1f} s "
        f"({connection.vendor})"
    )

    compute, page_cold, page_warm = [], [], []
    client = Client()
    client.force_login(coord)
    url = f"/studies/{study.pk}/results/"
    client.get(url)  # a server process compiles templates and imports once: not part of a page view
    for _ in range(args.repeat):
        cache.clear()
        t = time.perf_counter()
        res = reader_study_results(study=study, use_cache=False)
        compute.append(time.perf_counter() - t)
        cache.clear()
        q = []
        with connection.execute_wrapper(
            lambda execute, sql, params, many, context, q=q: (q.append(sql), execute(sql, params, many, context))[1]
        ):
            t = time.perf_counter()
            r = client.get(url)
            page_cold.append(time.perf_counter() - t)
        assert r.status_code == 200 and b"roc-figure-0" in r.content, r.status_code
        t = time.perf_counter()
        r = client.get(url)
        page_warm.append(time.perf_counter() - t)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(reader_study_results, study=study, use_cache=False)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    m = res["tasks"][0]["mrmc"]
    print(f"covariances: {res['tasks'][0].get('covariance')}; {res['tasks'][0].get('missing_note', '')}")
    print(
        f"MRMC: readers' mean AUC {m['reader_mean_auc']:.3f} vs model {m['model_auc']:.3f}, "
        f"difference {m['estimate']:+.3f} (95% CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f}), p = {m['p_value']:.3g}"
    )
    med = statistics.median
    print(
        f"results computation (no cache):        median {med(compute) * 1000:7.1f} ms  max {max(compute) * 1000:7.1f} ms"
    )
    print(
        f"results page, cold (compute + render): median {med(page_cold) * 1000:7.1f} ms  max {max(page_cold) * 1000:7.1f} ms"
        f"  ({len(q)} queries, {len(r.content) / 1024:.0f} KiB HTML)"
    )
    print(
        f"results page, warm (cached results):   median {med(page_warm) * 1000:7.1f} ms  max {max(page_warm) * 1000:7.1f} ms"
    )
    ok = max(page_cold) < 2.0
    print(f"target < 2 s for the cold page: {'met' if ok else 'MISSED'}")
    del np


if __name__ == "__main__":
    main()
