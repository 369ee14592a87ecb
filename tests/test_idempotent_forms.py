"""Submitting a create form twice (double click, browser resend) creates one object: each form carries a
one-time submission token and the service returns the first submission's object for a repeat. A reader
cannot fetch the photos of a study case ahead of their reading position."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import Case, Photo
from derm_portal import roles
from inference.models import TrainingRun
from reports import services as study_services
from reports.models import ReaderStudy, Session
from tests.factories import image_bytes
from tests.inference.test_training import labelled_cases  # noqa: F401  (fixture)
from tests.reports.factories import build_study

pytestmark = pytest.mark.django_db


def _token(client, url) -> str:
    page = client.get(url).content.decode()
    found = re.search(r'name="submission_token" value="([0-9a-f]{32})"', page)
    assert found, "the form carries no submission token"
    return found.group(1)


def test_training_form_submitted_twice_starts_one_run(client, users, labelled_cases, monkeypatch):
    from inference import jobs

    monkeypatch.setattr(jobs, "enqueue_training", lambda pk: None)
    client.force_login(users["admin"])
    url = reverse("inference:training_list")
    data = {"source_set": "confirmed", "epochs": "1", "image_size": "64", "submission_token": _token(client, url)}
    first, second = client.post(url, data), client.post(url, data)
    assert TrainingRun.objects.count() == 1
    assert first.status_code == second.status_code == 302 and first.url == second.url
    client.post(url, {**data, "submission_token": _token(client, url)})  # a new form is a new run
    assert TrainingRun.objects.count() == 2


def test_new_case_form_submitted_twice_creates_one_case(users, taxonomy):
    client = Client()
    client.force_login(users[roles.DERMATOLOGIST])
    url = reverse("annotation:case_create")
    token = _token(client, url)

    def post():
        from django.core.files.uploadedfile import SimpleUploadedFile

        return client.post(
            url,
            {
                "patient_code": "PSN-TWICE",
                "sex": "female",
                "modality": "clinical",
                "submission_token": token,
                "photos": [SimpleUploadedFile("a.jpg", image_bytes(), content_type="image/jpeg")],
            },
        )

    first, second = post(), post()
    assert Case.objects.count() == 1 and Photo.objects.count() == 1
    assert first.status_code == second.status_code == 302 and first.url == second.url


def test_new_study_form_submitted_twice_creates_one_study(users, taxonomy):
    client = Client()
    client.force_login(users[roles.COORDINATOR])
    url = reverse("reports:study_create")
    data = {
        "title": "Twice",
        "question_type": "binary",
        "positive_codes": ["mel"],
        "class_level": "sub",
        "confidence_scale": "five",
        "shuffle": "on",
        "submission_token": _token(client, url),
    }
    first, second = client.post(url, data), client.post(url, data)
    assert ReaderStudy.objects.count() == 1, first.content.decode()[-2000:]
    assert first.status_code == second.status_code == 302 and first.url == second.url


def test_a_malformed_token_is_refused_with_a_message(users, taxonomy):
    with pytest.raises(Exception, match="submission_token is malformed"):
        study_services.study_create(
            title="x",
            taxonomy=taxonomy,
            created_by=users[roles.COORDINATOR],
            positive_codes=["mel"],
            submission_token="../../x",
        )
    assert not ReaderStudy.objects.exists()


def test_reader_fetches_photos_of_the_current_case_only(users, taxonomy):
    study, _ = build_study(users=users, taxonomy=taxonomy)
    reader = users[roles.READER]
    sr = study.readers.get(user=reader)
    order = study_services.reader_order(sr)
    numbers = {sc.pk: sc.number for sc in study.study_cases.all()}
    client = Client()
    client.force_login(reader)

    def photo(pk):
        return client.get(f"/reading/{study.pk}/case/{numbers[pk]}/photo/0").status_code

    assert photo(order[0]) == 200
    assert [photo(pk) for pk in order[1:]] == [403] * (len(order) - 1)  # every case ahead
    first = study.study_cases.get(pk=order[0])
    study_services.reading_serve(study_reader=sr, study_case=first, session=Session.UNAIDED)
    study_services.reading_submit(
        study_reader=sr,
        study_case=first,
        session=Session.UNAIDED,
        answer="pos",
        confidence=4,
        active_ms=1000,
        comment="",
    )
    assert photo(order[1]) == 200
    assert photo(order[0]) == 403  # answered, and the study does not allow going back
    assert [photo(pk) for pk in order[2:]] == [403] * (len(order) - 2)
