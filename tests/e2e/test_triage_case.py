"""Browser tests (headless Chromium) of urgency tiers on the case page: a clinical photo uploaded
against a model trained on dermoscopic photos gets no tier, no advice and no patient report link, and
the page says why; a differential of 62% melanoma is shown urgent with its advice and a report link."""

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from derm_portal import roles
from inference.ml import triage as tri
from inference.ml.taxonomy import Taxonomy
from inference.models import Prediction
from inference.tiers import TIERS
from tests.factories import make_photo
from tests.inference.conftest import tiny_model_dir  # noqa: F401 (fixture)
from tests.inference.factories import ModelVersionFactory, PredictionFactory
from tests.inference.triage_fixtures import triage_data_photo, triaged_active_model, triaged_model_dir  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wait(browser, cond, timeout=60):
    return WebDriverWait(browser, timeout).until(lambda d: cond(d))


def test_clinical_photo_against_dermoscopy_model_gets_no_tier_and_no_report(
    browser, live_server, login, triaged_active_model, triage_data_photo, case, users, tmp_path
):
    photo_file = tmp_path / "clinical.jpg"
    photo_file.write_bytes(triage_data_photo)
    login(users[roles.DERMATOLOGIST])
    _wait(browser, lambda d: "/accounts/login" not in d.current_url)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=modality]")).select_by_value("clinical")
    browser.find_element(By.CSS_SELECTOR, "#dropzone input[type=file]").send_keys(str(photo_file))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".pp-photo[data-status=done] .pp-diff"))
    pred = Prediction.objects.get()
    assert pred.abstain == "modality"
    block = browser.find_element(By.ID, f"prediction-photo-{pred.photo_id}")
    box = block.find_element(By.CSS_SELECTOR, ".pp-triage")
    assert box.get_attribute("data-tier") == "" and box.get_attribute("data-abstain") == "modality"
    assert "this model was trained on dermoscopic photos" in box.text
    assert "NO ADVICE" in box.text.upper() and "gives no tier for this photo" in box.text
    assert not any(t["advice"] in block.text for t in TIERS.values())
    assert block.find_elements(By.CSS_SELECTOR, ".pp-row")  # the differential stays visible
    # no patient report: no link anywhere on the page, the report panel and the URL say why
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".pp-photo[data-status=done]"))
    assert not browser.find_elements(By.CSS_SELECTOR, ".patient-report-link")
    assert "trained on dermoscopic photos" in browser.find_element(By.ID, "patient-reports").text
    browser.get(f"{live_server.url}/photos/{pred.photo_id}/patient-report/")
    refusal = browser.find_element(By.ID, "no-report").text
    assert "No patient report for this photo." in refusal and "trained on dermoscopic photos" in refusal
    assert not browser.find_elements(By.ID, "pdf-link")


def test_a_62_percent_melanoma_is_shown_urgent(browser, live_server, login, triaged_model_dir, case, users, taxonomy):
    tax = Taxonomy.from_json(triaged_model_dir / "taxonomy.json")
    q = np.zeros(len(tax.sub_classes))
    q[tax.sub_classes.index("mel")], q[tax.sub_classes.index("nv")] = 0.62, 0.38
    t = tri.TriageModel.load(triaged_model_dir, tax).assess(q[None], modalities=["dermoscopic"])[0]
    photo = make_photo(case, modality="dermoscopic")
    ranked = [
        {"sub_class": "mel", "meta_class": "melanocytic", "probability": 0.62, "fine_probability": 0.6},
        {"sub_class": "nv", "meta_class": "melanocytic", "probability": 0.38, "fine_probability": 0.4},
    ]
    PredictionFactory(
        photo=photo,
        model_version=ModelVersionFactory(taxonomy=taxonomy, name="triaged"),
        ranked=ranked,
        meta_probabilities={"melanocytic": 1.0},
        malignancy_score=2.24,
        malignancy_grade=2,
        margin=0.24,
        tier=t["tier"],
        triage_reason=t["reason"],
        urgent_probability=t["urgent_probability"],
        malignant_probability=t["malignant_probability"],
        triage_thresholds=t["thresholds"],
        calibrated=True,
    )
    login(users[roles.DERMATOLOGIST])
    _wait(browser, lambda d: "/accounts/login" not in d.current_url)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    box = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#prediction-photo-{photo.pk} .pp-triage"))
    assert box.get_attribute("data-tier") == "urgent"
    assert "URGENT" in box.text.upper() and TIERS["urgent"]["advice"] in box.text
    assert "62%" in box.text  # the urgent mass, as a number
    block = browser.find_element(By.ID, f"prediction-photo-{photo.pk}")
    assert "S = 2.24" in block.text and "Low malignancy" in block.text  # S and grade stay visible as numbers
    assert TIERS["refer"]["advice"] not in block.text
    _wait(browser, lambda d: box.find_elements(By.CSS_SELECTOR, ".patient-report-link"))
