"""Patient malignancy report: content per grade, no report without a graded prediction,
the PDF's text, and who may open it."""
import shutil
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from derm_portal import roles
from inference.models import ModelStatus, Prediction, PredictionStatus
from reports import patient_report as pr
from tests.conftest import need
from tests.factories import CaseFactory, PatientFactory, make_photo
from tests.inference.factories import ModelVersionFactory, PredictionFactory


def make_model(taxonomy, *, status=ModelStatus.ACTIVE, name="lite0-ham10000"):
    return ModelVersionFactory(name=name, taxonomy=taxonomy, status=status)


def make_prediction(photo, model, *, grade=3, score=2.27, **extra):
    """A graded prediction (mel first, RANKED) with a clear meta-class answer."""
    return PredictionFactory(
        photo=photo, model_version=model,
        meta_probabilities={"melanocytic": 0.92, "keratinocytic": 0.08, "dermal_vascular": 0.0},
        malignancy_score=score if grade else None, malignancy_grade=grade, margin=0.32, **extra,
    )


@pytest.fixture
def secret_case(db, users):
    patient = PatientFactory(code="PSN-PRIVATE-42", birth_year=1958)
    return CaseFactory(patient=patient, body_site="right-calf-zz", clinical_history="grew since summer qq", external_id="HAM_0001234")


@pytest.fixture
def photo(secret_case):
    return make_photo(secret_case, size=(120, 90))


@pytest.fixture
def model(taxonomy):
    return make_model(taxonomy)


def client_for(user):
    c = Client()
    c.force_login(user)
    return c


def pdf_text(data: bytes) -> str:
    need(shutil.which("pdftotext") is not None, "pdftotext (poppler-utils) is not installed")
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True, check=True)
    return " ".join(out.stdout.decode("utf-8").split())


# --------------------------------------------------------------------------- content
@pytest.mark.parametrize(
    "grade,score,label,advice",
    [
        (1, 1.08, "Benign", "Keep an eye on it yourself"),
        (2, 1.93, "Low malignancy", "see a dermatologist at a hospital near you"),
        (3, 2.71, "High malignancy", "go to a tertiary (specialist) hospital urgently"),
    ],
)
def test_pdf_has_grade_score_advice_and_disclaimer(grade, score, label, advice, photo, model, users):
    make_prediction(photo, model, grade=grade, score=score)
    resp = client_for(users[roles.DERMATOLOGIST]).get(reverse("reports:patient_report_pdf", args=[photo.pk]))
    assert resp.status_code == 200
    assert resp["Content-Type"] == "application/pdf"
    data = resp.content
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    assert label in text and pr.GRADES[grade]["headline"] in text
    assert f"S = {score:.2f}" in text
    assert advice in text
    assert "It is not a diagnosis" in text
    assert "HAM_0001234" in text  # case reference
    assert "lite0-ham10000" in text and f"version {model.pk}" in text
    assert "Melanoma" in text and "Melanocytic naevus" in text  # display names, not codes
    assert "62 %" in text
    for private in ("PSN-PRIVATE-42", "right-calf-zz", "grew since summer", "1958"):
        assert private not in text


@pytest.mark.parametrize("grade,colour_class,advice", [(1, "g1", "Keep an eye on it"), (2, "g2", "nearby"), (3, "g3", "tertiary")])
def test_html_page_shows_grade_advice_and_photo(grade, colour_class, advice, photo, model, users):
    make_prediction(photo, model, grade=grade, score={1: 1.2, 2: 2.0, 3: 2.8}[grade])
    resp = client_for(users[roles.ADMIN]).get(reverse("reports:patient_report", args=[photo.pk]))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert f'class="grade-text grade {colour_class}"' in html
    assert (advice in html) if advice != "nearby" else ("hospital near you" in html)
    assert reverse("annotation:photo_file", args=[photo.pk]) in html
    assert reverse("reports:patient_report_pdf", args=[photo.pk]) in html
    assert "It is not a diagnosis" in html
    assert "PSN-PRIVATE-42" not in html and "right-calf-zz" not in html


def test_lay_advice_follows_the_methods_mapping():
    assert "Come back" in pr.GRADES[1]["advice"]
    assert "nearby" in pr.GRADES[2]["advice_short"] and "dermatologist" in pr.GRADES[2]["advice"]
    assert "tertiary" in pr.GRADES[3]["advice"] and "urgently" in pr.GRADES[3]["advice"]


def test_unfamiliar_photo_adds_a_caution(photo, model, users):
    make_prediction(photo, model, looks_unfamiliar=True)
    report = pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk)
    assert "looks unlike the photos the model learned from" in report.caution
    assert "looks unlike the photos" in pdf_text(pr.patient_report_pdf(report=report))


def test_report_uses_the_active_models_prediction(photo, taxonomy, users):
    active = make_model(taxonomy, name="active-model")
    candidate = make_model(taxonomy, status=ModelStatus.CANDIDATE, name="candidate-model")
    make_prediction(photo, active, grade=1, score=1.1)
    later = make_prediction(photo, candidate, grade=3, score=2.9)
    Prediction.objects.filter(pk=later.pk).update(finished_at=timezone.now() + timedelta(minutes=5))
    report = pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk)
    assert (report.grade, report.model_name) == (1, "active-model")


# --------------------------------------------------------------------------- no report
@pytest.mark.parametrize(
    "state,message",
    [
        ("none", "has no model prediction yet"),
        (PredictionStatus.PENDING, "still being computed"),
        (PredictionStatus.RUNNING, "still being computed"),
        (PredictionStatus.FAILED, "prediction for this photo failed"),
        ("ungraded", "gives no malignancy grade"),
    ],
)
def test_no_graded_prediction_says_so_and_gives_no_pdf(state, message, photo, model, users):
    if state == "ungraded":
        make_prediction(photo, model, grade=None)
    elif state != "none":
        make_prediction(photo, model, status=state, grade=None)
    client = client_for(users[roles.DERMATOLOGIST])
    page = client.get(reverse("reports:patient_report", args=[photo.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "No patient report for this photo." in html and message in html
    assert reverse("reports:patient_report_pdf", args=[photo.pk]) not in html
    pdf = client.get(reverse("reports:patient_report_pdf", args=[photo.pk]))
    assert pdf.status_code == 404
    assert pdf["Content-Type"].startswith("text/html") and not pdf.content.startswith(b"%PDF")
    assert message in pdf.content.decode()
    with pytest.raises(ValueError):
        pr.patient_report_pdf(report=pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk))


def test_unknown_photo_is_404(users, db):
    assert client_for(users[roles.DERMATOLOGIST]).get(reverse("reports:patient_report", args=[987654])).status_code == 404


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("role", roles.ALL_ROLES)
@pytest.mark.parametrize("name", ["reports:patient_report", "reports:patient_report_pdf"])
def test_report_permissions_per_role(role, name, photo, model, users):
    make_prediction(photo, model)
    resp = client_for(users[role]).get(reverse(name, args=[photo.pk]))
    if role in (roles.DERMATOLOGIST, roles.ADMIN):
        assert resp.status_code == 200
    else:  # annotator, coordinator, reader
        assert resp.status_code == 403
        assert b"%PDF" not in resp.content and b"tertiary" not in resp.content


@pytest.mark.parametrize("name", ["reports:patient_report", "reports:patient_report_pdf"])
def test_anonymous_is_sent_to_login(name, photo, model):
    make_prediction(photo, model)
    resp = Client().get(reverse(name, args=[photo.pk]))
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]


@pytest.mark.parametrize("role", roles.ALL_ROLES)
def test_case_panel_lists_report_links_for_doctors_only(role, secret_case, photo, model, users):
    make_prediction(photo, model)
    ungraded = make_photo(secret_case, color=(10, 200, 30))
    resp = client_for(users[role]).get(reverse("annotation:case_detail", args=[secret_case.pk]))
    html = resp.content.decode()
    if role in (roles.DERMATOLOGIST, roles.ADMIN):
        assert 'id="patient-reports"' in html
        assert reverse("reports:patient_report", args=[photo.pk]) in html
        assert reverse("reports:patient_report", args=[ungraded.pk]) not in html
        assert "No graded prediction yet" in html
    else:
        assert 'id="patient-reports"' not in html
        assert reverse("reports:patient_report", args=[photo.pk]) not in html
