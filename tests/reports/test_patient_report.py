"""Patient malignancy report: advice per urgency tier (S and grade as numbers), no report without a
tier (never for a photo the model abstained on), a confirmed histopathology diagnosis first with the
model's view secondary, the PDF's text, and who may open it."""

import shutil
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.models import DiagnosisLabel, LabelSource, SubClass
from derm_portal import roles
from inference.models import ModelStatus, Prediction, PredictionStatus
from inference.tiers import TIERS
from reports import patient_report as pr
from reports.patient_report_pdf import patient_report_pdf
from tests.conftest import need
from tests.factories import CaseFactory, PatientFactory, make_photo
from tests.inference.factories import ModelVersionFactory, PredictionFactory


def make_model(taxonomy, *, status=ModelStatus.ACTIVE, name="lite0-ham10000"):
    return ModelVersionFactory(name=name, taxonomy=taxonomy, status=status)


GRADE_TIER = {1: "routine", 2: "refer", 3: "urgent"}


def make_prediction(photo, model, *, grade=3, score=2.27, **extra):
    """A graded prediction (mel first, RANKED) with a clear meta-class answer and the tier of its grade."""
    extra.setdefault("tier", GRADE_TIER.get(grade, ""))
    return PredictionFactory(
        photo=photo,
        model_version=model,
        meta_probabilities={"melanocytic": 0.92, "keratinocytic": 0.08, "dermal_vascular": 0.0},
        malignancy_score=score if grade else None,
        malignancy_grade=grade,
        margin=0.32,
        **extra,
    )


@pytest.fixture
def secret_case(db, users):
    patient = PatientFactory(code="PSN-PRIVATE-42", birth_year=1958)
    return CaseFactory(
        patient=patient, body_site="right-calf-zz", clinical_history="grew since summer qq", external_id="HAM_0001234"
    )


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
        (1, 1.08, "Routine", "Keep an eye on it yourself"),
        (2, 1.93, "Refer", "see a dermatologist at a hospital near you"),
        (3, 2.71, "Urgent", "go to a tertiary (specialist) hospital urgently"),
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
    assert label in text and TIERS[GRADE_TIER[grade]]["headline"] in text
    assert f"S = {score:.2f}" in text
    assert advice in text
    assert "It is not a diagnosis" in text
    assert "HAM_0001234" in text  # case reference
    assert "lite0-ham10000" in text and f"version {model.pk}" in text
    assert "Melanoma" in text and "Melanocytic naevus" in text  # display names, not codes
    assert "62 %" in text
    for private in ("PSN-PRIVATE-42", "right-calf-zz", "grew since summer", "1958"):
        assert private not in text


@pytest.mark.parametrize(
    "grade,tier,advice", [(1, "routine", "Keep an eye on it"), (2, "refer", "nearby"), (3, "urgent", "tertiary")]
)
def test_html_page_shows_tier_advice_and_photo(grade, tier, advice, photo, model, users):
    make_prediction(photo, model, grade=grade, score={1: 1.2, 2: 2.0, 3: 2.8}[grade])
    resp = client_for(users[roles.ADMIN]).get(reverse("reports:patient_report", args=[photo.pk]))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert f'data-tier="{tier}">{TIERS[tier]["label"]}<' in html
    assert (advice in html) if advice != "nearby" else ("hospital near you" in html)
    assert reverse("annotation:photo_file", args=[photo.pk]) in html
    assert reverse("reports:patient_report_pdf", args=[photo.pk]) in html
    assert "It is not a diagnosis" in html
    assert "PSN-PRIVATE-42" not in html and "right-calf-zz" not in html


def test_lay_advice_follows_the_tiers():
    assert "Come back" in TIERS["routine"]["patient_advice"]
    assert "dermatologist" in TIERS["refer"]["patient_advice"] and "near you" in TIERS["refer"]["patient_advice"]
    assert "tertiary" in TIERS["urgent"]["patient_advice"] and "urgently" in TIERS["urgent"]["patient_advice"]
    assert not any("advice" in g for g in pr.GRADES.values())  # the grade never carries advice


def test_advice_follows_the_tier_not_the_score(photo, model, users):
    """S = 1.40 is "benign" as a grade, but a 62% melanoma is urgent: the report says urgent."""
    make_prediction(
        photo, model, grade=1, score=1.40, tier="urgent", urgent_probability=0.62, malignant_probability=0.64
    )
    report = pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk)
    text = pdf_text(patient_report_pdf(report=report))
    assert "62% chance of a serious skin cancer" in text and "64% chance of any skin cancer" in text
    assert "Urgent" in text and "tertiary (specialist) hospital urgently" in text and "S = 1.40" in text
    assert "Keep an eye on it yourself" not in text


def test_confirmed_histopathology_comes_first_and_the_model_is_secondary(photo, model, users, taxonomy):
    make_prediction(photo, model, grade=3, score=2.6)
    bcc = SubClass.objects.get(taxonomy=taxonomy, code="bcc")
    DiagnosisLabel.objects.create(case=photo.case, sub_class=bcc, source=LabelSource.HISTOPATHOLOGY, confirmed=True)
    client = client_for(users[roles.DERMATOLOGIST])
    html = client.get(reverse("reports:patient_report", args=[photo.pk])).content.decode()
    assert 'id="confirmed"' in html and bcc.display_name in html and "secondary" in html
    text = pdf_text(client.get(reverse("reports:patient_report_pdf", args=[photo.pk])).content)
    assert f"confirmed by a tissue test (histopathology): {bcc.display_name}" in text
    assert "the model's view from the photo, below, is secondary" in text and "The model's view (secondary)" in text
    assert text.index("Confirmed diagnosis") < text.index("The model's view (secondary)")


def test_no_report_for_a_photo_the_model_abstained_on(secret_case, photo, model, users):
    reason = "this model was trained on dermoscopic photos; this photo is clinical, so the model gives no advice on it"
    make_prediction(photo, model, grade=1, score=1.2, tier="", abstain="modality", triage_reason=reason)
    client = client_for(users[roles.DERMATOLOGIST])
    page = client.get(reverse("reports:patient_report", args=[photo.pk])).content.decode()
    assert "No patient report for this photo." in page and "trained on dermoscopic photos" in page
    assert reverse("reports:patient_report_pdf", args=[photo.pk]) not in page
    pdf = client.get(reverse("reports:patient_report_pdf", args=[photo.pk]))
    assert pdf.status_code == 404 and "trained on dermoscopic photos" in pdf.content.decode()
    case_html = client.get(reverse("annotation:case_detail", args=[secret_case.pk])).content.decode()
    assert reverse("reports:patient_report", args=[photo.pk]) not in case_html
    assert "trained on dermoscopic photos" in case_html


def test_unfamiliar_photo_adds_a_caution(photo, model, users):
    make_prediction(photo, model, looks_unfamiliar=True)
    report = pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk)
    assert "looks unlike the photos the model learned from" in report.caution
    assert "looks unlike the photos" in pdf_text(patient_report_pdf(report=report))


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
        patient_report_pdf(report=pr.patient_report_build(user=users[roles.DERMATOLOGIST], photo_pk=photo.pk))


def test_unknown_photo_is_404(users, db):
    assert (
        client_for(users[roles.DERMATOLOGIST]).get(reverse("reports:patient_report", args=[987654])).status_code == 404
    )


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
        assert "has no model prediction yet" in html
    else:
        assert 'id="patient-reports"' not in html
        assert reverse("reports:patient_report", args=[photo.pk]) not in html
