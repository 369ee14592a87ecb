"""The busiest pages cost a fixed number of SQL queries, whatever the number of cases on the list or of
photos (with predictions, heat maps, boxes, assessments) on the case page; rows every user sees alike
(taxonomy, active model) come from the shared cache and follow a change at once; each role still sees
only the cases it may."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.models import DiagnosisLabel, LabelSource, Photo, SubClass
from derm_portal import roles
from tests.busy_case import active_model, busy_case
from tests.factories import CaseFactory

pytestmark = pytest.mark.django_db

# Measured with the database session engine of the tests (production reads the session from the
# cache: one query less). A change that adds a query to every request shows here.
LIST_QUERIES = 6
CASE_PAGE_QUERIES = {roles.DERMATOLOGIST: 16, roles.ADMIN: 17}  # admins also get the reader-study panel


def _queries(client, url: str) -> tuple[int, str]:
    client.get(url)  # the shared cache is warm, as on a running server
    with CaptureQueriesContext(connection) as ctx:
        r = client.get(url)
    assert r.status_code == 200, url
    return len(ctx.captured_queries), r.content.decode()


def _cases(n: int, taxonomy, start: int = 0) -> None:
    """n cases with one photo row (no file: the list never opens it) and a label; odd ones confirmed."""
    subs = list(SubClass.objects.filter(taxonomy=taxonomy, code__in=["mel", "nv", "bcc"]))
    for i in range(start, start + n):
        c = CaseFactory(external_id=f"LIST-{i:03d}")
        Photo.objects.create(case=c, file=f"photos/list-{i}.jpg", width=60, height=40, sha256=f"{i:064x}")
        confirmed = i % 2 == 1
        DiagnosisLabel.objects.create(
            case=c,
            sub_class=subs[i % len(subs)],
            source=LabelSource.HISTOPATHOLOGY if confirmed else LabelSource.CLINICAL,
            confirmed=confirmed,
        )


@pytest.mark.parametrize("query", ["", "?diagnosis=mel&modality=clinical", "?confirmed=yes", "?page=2"])
def test_case_list_queries_do_not_grow_with_the_cases(client, users, taxonomy, query):
    client.force_login(users[roles.DERMATOLOGIST])
    url = reverse("annotation:case_list") + query
    _cases(5, taxonomy)
    few, _ = _queries(client, url)
    _cases(45, taxonomy, start=5)
    many, page = _queries(client, url)
    assert few == many <= LIST_QUERIES, (few, many)
    if not query:
        assert page.count("LIST-0") == 25  # a full page of rows was rendered with those queries


def test_each_role_still_sees_only_its_cases_on_the_list(client, users, taxonomy):
    _cases(6, taxonomy)
    url = reverse("annotation:case_list")
    client.force_login(users[roles.DERMATOLOGIST])
    _, page = _queries(client, url)
    assert all(f"LIST-{i:03d}" in page for i in range(6))
    client.force_login(users[roles.COORDINATOR])  # confirmed cases only (roles.py)
    _, page = _queries(client, url)
    assert [i for i in range(6) if f"LIST-{i:03d}" in page] == [1, 3, 5]
    client.force_login(users[roles.READER])
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("role", [roles.DERMATOLOGIST, roles.ADMIN])
def test_case_page_queries_do_not_grow_with_the_photos(client, users, taxonomy, role):
    client.force_login(users[role])
    small, big = busy_case(2), busy_case(8)
    n_small, _ = _queries(client, reverse("annotation:case_detail", args=[small.pk]))
    n_big, page = _queries(client, reverse("annotation:case_detail", args=[big.pk]))
    assert n_small == n_big <= CASE_PAGE_QUERIES[role], (n_small, n_big)
    assert page.count('class="pp-photo"') == 8 and page.count("pp-overlay") >= 8  # every block rendered
    assert page.count("pp-box") >= 8 * 6  # both annotators' boxes on each photo


def test_a_renamed_class_and_a_retired_model_show_at_once(client, users, taxonomy):
    from annotation.labels import subclass_update
    from inference.services.registry import model_retire

    admin = users[roles.ADMIN]
    client.force_login(admin)
    case = busy_case(1)
    model = active_model()
    url = reverse("annotation:case_detail", args=[case.pk])
    _, page = _queries(client, url)
    recompute = "Run the active model on photos without a result"
    assert "Melanoma" in page and recompute in page
    subclass_update(sub_class=SubClass.objects.get(taxonomy=taxonomy, code="mel"), by=admin, display_name="Melanoma X")
    model_retire(model_version=model, by=admin)
    page = client.get(url).content.decode()
    assert "Melanoma X" in page
    assert recompute not in page and "retired</span>" in page


def test_pages_work_with_the_cache_down(client, users, taxonomy, settings):
    """The shared cache is a shortcut: with Redis unreachable the rows are read from the database."""
    settings.CACHES = {  # nothing listens on port 1: every cache call fails at once
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    case = busy_case(1)
    client.force_login(users[roles.DERMATOLOGIST])
    assert client.get(reverse("annotation:case_list")).status_code == 200
    page = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
    assert "Melanoma" in page
