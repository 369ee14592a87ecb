"""Case list page and API list: filters, the label shown, pagination, query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotation import services
from annotation.models import SubClass
from derm_portal import roles
from tests.factories import CaseFactory, PatientFactory, image_bytes


@pytest.fixture
def world(taxonomy, users):
    derm = users[roles.DERMATOLOGIST]
    sub = {s.code: s for s in SubClass.objects.filter(taxonomy=taxonomy)}
    mel = CaseFactory(patient=PatientFactory(code="PSN-MEL"), body_site="face")
    services.label_record(case=mel, sub_class=sub["nv"], source="clinical", by=derm)
    services.label_record(case=mel, sub_class=sub["mel"], source="histopathology", by=derm)
    services.photo_attach(
        case=mel, data=image_bytes("JPEG", color=(1, 1, 1)), filename="d.jpg", modality="dermoscopic", run_hooks=False
    )
    bcc = CaseFactory(patient=PatientFactory(code="PSN-BCC"), clinical_history="pearly papule")
    services.label_record(case=bcc, sub_class=sub["bcc"], source="consensus", by=derm)
    services.photo_attach(
        case=bcc, data=image_bytes("JPEG", color=(2, 2, 2)), filename="c.jpg", modality="clinical", run_hooks=False
    )
    services.photo_attach(
        case=bcc, data=image_bytes("JPEG", color=(3, 3, 3)), filename="c2.jpg", modality="clinical", run_hooks=False
    )
    empty = CaseFactory(patient=PatientFactory(code="PSN-NONE"))
    services.case_set_status(case=empty, status="excluded", exclusion_reason="blur", by=derm)
    return {"mel": mel, "bcc": bcc, "empty": empty, "derm": derm}


def _refs(response) -> set[str]:
    return {c.patient.code for c in response.context["page"].object_list}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, expected",
    [
        ("", {"PSN-MEL", "PSN-BCC", "PSN-NONE"}),
        ("status=confirmed", {"PSN-MEL"}),
        ("status=excluded", {"PSN-NONE"}),
        ("diagnosis=mel", {"PSN-MEL"}),
        ("diagnosis=nv", {"PSN-MEL"}),  # any source
        ("diagnosis=bcc&confirmed=no", {"PSN-BCC"}),
        ("confirmed=yes", {"PSN-MEL"}),
        ("confirmed=no", {"PSN-BCC", "PSN-NONE"}),
        ("modality=dermoscopic", {"PSN-MEL"}),
        ("modality=clinical", {"PSN-BCC"}),
        ("q=pearly", {"PSN-BCC"}),
        ("q=psn-mel", {"PSN-MEL"}),
        ("q=face", {"PSN-MEL"}),
        ("status=confirmed&diagnosis=bcc", set()),
    ],
)
def test_case_list_filters(client, world, query, expected):
    client.force_login(world["derm"])
    response = client.get(f"/cases/?{query}")
    assert response.status_code == 200
    assert _refs(response) == expected


@pytest.mark.django_db
def test_list_shows_the_confirmed_label_first_with_its_source(client, world):
    client.force_login(world["derm"])
    rows = {c.patient.code: c for c in client.get("/cases/").context["page"].object_list}
    assert (rows["PSN-MEL"].diagnosis_code, rows["PSN-MEL"].diagnosis_source, rows["PSN-MEL"].diagnosis_confirmed) == (
        "mel",
        "histopathology",
        True,
    )
    assert (rows["PSN-BCC"].diagnosis_code, rows["PSN-BCC"].diagnosis_confirmed, rows["PSN-BCC"].photo_count) == (
        "bcc",
        False,
        2,
    )
    assert rows["PSN-NONE"].diagnosis_code is None and not rows["PSN-NONE"].photo_count
    html = client.get("/cases/").content.decode()
    assert "histo ✓" in html and ">Clinical consensus<" in html


@pytest.mark.django_db
def test_api_list_filters_and_fields(client, world):
    client.force_login(world["derm"])
    data = client.get("/api/cases/?diagnosis=mel&confirmed=yes").json()
    assert data["count"] == 1
    row = data["results"][0]
    assert (row["patient_code"], row["diagnosis"], row["diagnosis_confirmed"], row["photo_count"]) == (
        "PSN-MEL",
        "mel",
        True,
        1,
    )
    assert client.get("/api/cases/?modality=clinical").json()["results"][0]["patient_code"] == "PSN-BCC"


def _bulk_cases(n):
    patient = PatientFactory(code="PSN-BULK")
    cases = [CaseFactory(patient=patient) for _ in range(n)]
    return cases


@pytest.mark.django_db
def test_html_pagination_and_constant_query_count(client, users, taxonomy):
    cases = _bulk_cases(60)
    client.force_login(users[roles.DERMATOLOGIST])
    client.get("/cases/")  # the taxonomy rows are read once, then come from the shared cache
    counts = {}
    pages = {}
    for page in (1, 2, 3):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"/cases/?page={page}")
        counts[page] = len(ctx.captured_queries)
        pages[page] = [c.pk for c in response.context["page"].object_list]
    assert [len(pages[p]) for p in (1, 2, 3)] == [25, 25, 10]
    newest_first = [c.pk for c in sorted(cases, key=lambda c: (c.created_at, c.pk), reverse=True)]
    assert pages[1] + pages[2] + pages[3] == newest_first
    assert counts[1] == counts[2] == counts[3], counts
    html = client.get("/cases/?status=open&page=2").content.decode()
    assert "status=open" in html  # pagination links keep the filters


@pytest.mark.django_db
def test_api_page_size_does_not_change_query_count(client, users, taxonomy):
    _bulk_cases(30)
    client.force_login(users[roles.DERMATOLOGIST])
    counts = {}
    for size in (5, 30):
        with CaptureQueriesContext(connection) as ctx:
            data = client.get(f"/api/cases/?page_size={size}").json()
        assert data["count"] == 30 and len(data["results"]) == size
        counts[size] = len(ctx.captured_queries)
    assert counts[5] == counts[30], counts
    assert len(client.get("/api/cases/?page_size=1000").json()["results"]) == 30  # capped at 200, 30 exist


@pytest.mark.django_db
def test_case_list_selector_count_does_not_evaluate_label_subqueries(users, taxonomy):
    from annotation import selectors

    _bulk_cases(3)
    qs = selectors.case_list(user=users[roles.DERMATOLOGIST])
    with CaptureQueriesContext(connection) as ctx:
        assert qs.count() == 3
    assert "diagnosislabel" not in ctx.captured_queries[0]["sql"].lower()
