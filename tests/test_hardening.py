"""Request guards and role scoping: a NUL byte in any query filter is a 400 (not a 500 from
the database), readers cannot read the API description, coordinators see confirmed cases
only (derm_portal/roles.py says so and the selectors do so)."""

from __future__ import annotations

import pytest

from annotation import services
from annotation.models import SubClass
from derm_portal import roles
from tests.factories import CaseFactory

FILTER_URLS = [
    "/cases/?q=%00",
    "/cases/?q=PSN%00&status=open",
    "/cases/?status=open&diagnosis=nv%00",
    "/cases/?%00=1",
    "/api/cases/?q=a%00b",
    "/api/cases/?diagnosis=%00",
    "/api/photos/?case=1%00",
    "/api/labels/?source=%00",
    "/taxonomy/?x=%00",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", FILTER_URLS)
def test_nul_byte_in_any_query_filter_is_a_400(client, users, case, url):
    client.force_login(users[roles.ADMIN])
    response = client.get(url)
    assert response.status_code == 400, (url, response.status_code)
    body = response.content.decode()
    assert "NUL" in body and "Traceback" not in body
    if url.startswith("/api/"):
        assert "NUL" in response.json()["detail"]


@pytest.mark.django_db
def test_nul_guard_answers_before_login_and_leaves_clean_queries_alone(client, users, case):
    assert client.get("/cases/?q=%00").status_code == 400  # anonymous too: nothing runs before it
    client.force_login(users[roles.ADMIN])
    assert client.get("/cases/?q=PSN&status=open").status_code == 200
    assert client.get("/api/cases/?q=x").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/", "/api/redoc/"])
@pytest.mark.parametrize("role", roles.ALL_ROLES)
def test_api_description_is_for_staff_not_readers(client, users, role, url):
    client.force_login(users[role])
    assert client.get(url).status_code == (403 if role == roles.READER else 200)


# --------------------------------------------------------------------------- coordinators
@pytest.fixture
def two_cases(users, taxonomy):
    derm = users[roles.DERMATOLOGIST]
    nv = SubClass.objects.get(taxonomy=taxonomy, code="nv")
    confirmed = CaseFactory(created_by=derm, external_id="CONFIRMED-1")
    services.label_record(case=confirmed, sub_class=nv, source="histopathology", by=derm)
    open_case = CaseFactory(created_by=derm, external_id="OPEN-1")
    services.label_record(case=open_case, sub_class=nv, source="consensus", by=derm)
    return confirmed, open_case


def test_roles_doc_says_what_coordinators_see():
    assert "sees only histopathology-confirmed cases" in roles.__doc__
    assert roles.COORDINATOR in roles.CAN_VIEW_CONFIRMED_CASES and roles.COORDINATOR not in roles.CAN_VIEW_ALL_CASES


@pytest.mark.django_db
def test_coordinator_sees_confirmed_cases_only(client, users, two_cases):
    confirmed, open_case = two_cases
    client.force_login(users[roles.COORDINATOR])
    listing = client.get("/cases/").content.decode()
    assert "CONFIRMED-1" in listing and "OPEN-1" not in listing
    assert client.get(f"/cases/{confirmed.pk}/").status_code == 200
    assert client.get(f"/cases/{open_case.pk}/").status_code == 404
    api = client.get("/api/cases/").json()
    assert [c["external_id"] for c in api["results"]] == ["CONFIRMED-1"]
    assert client.get(f"/api/cases/{open_case.pk}/").status_code == 404
    labels = client.get("/api/labels/").json()["results"]
    assert {row["case"] for row in labels} == {confirmed.pk}


@pytest.mark.django_db
@pytest.mark.parametrize("role", [roles.DERMATOLOGIST, roles.ANNOTATOR, roles.ADMIN])
def test_clinical_roles_see_every_case(client, users, two_cases, role):
    client.force_login(users[role])
    listing = client.get("/cases/").content.decode()
    assert "CONFIRMED-1" in listing and "OPEN-1" in listing


@pytest.mark.django_db
def test_coordinator_who_is_also_an_annotator_sees_every_case(client, users, two_cases):
    from django.contrib.auth.models import Group

    user = users[roles.COORDINATOR]
    user.groups.add(Group.objects.get(name=roles.ANNOTATOR))
    client.force_login(user)
    assert client.get(f"/cases/{two_cases[1].pk}/").status_code == 200
