"""Browser test (headless Chromium): an admin activates a model from its page. The confirmation page
shows the candidate's held-out numbers beside the active model's and the checks the tiny model fails;
the browser will not submit without the confirmation box and the written reason; after activation the
reason is in the model's activation log. A screenshot of the confirmation page is saved next to the
test's files (DERM_E2E_SCREENSHOTS=<folder> keeps a copy)."""

import os
import shutil
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from derm_portal import roles
from inference import services
from inference.models import ModelActivation, ModelStatus
from tests.e2e.pages import submit_and_wait
from tests.inference.conftest import active_model, model_copy, tiny_model_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wait(browser, cond, timeout=30):
    return WebDriverWait(browser, timeout).until(lambda d: cond(d))


def test_activation_asks_for_confirmation_and_a_logged_reason(
    browser, live_server, login, active_model, users, model_copy, tmp_path
):
    other = model_copy.parent / "candidate"
    shutil.copytree(model_copy, other)
    mv = services.model_register(model_dir=other, name="candidate model")
    login(users[roles.ADMIN])
    _wait(browser, lambda d: "/accounts/login" not in d.current_url)
    browser.get(f"{live_server.url}/models/{mv.pk}/")
    submit_and_wait(browser, browser.find_element(By.ID, "activate-link"))

    compare = browser.find_element(By.ID, "activation-compare")
    assert "tiny test model" in compare.text  # the active model's column
    assert "Urgent tier (high-grade malignancy): sensitivity" in compare.text
    concerns = browser.find_element(By.ID, "activation-concerns").text
    assert "fewer than 20 photos of" in concerns and "No triage calibration" in concerns
    shot = tmp_path / "activation.png"
    browser.set_window_size(1280, 1100)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("DERM_E2E_SCREENSHOTS"):
        Path(os.environ["DERM_E2E_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["DERM_E2E_SCREENSHOTS"]) / "model-activation.png")

    # neither box filled: the browser does not send the form
    button = browser.find_element(By.ID, "activation-submit")
    button.click()
    assert browser.execute_script("return document.getElementById('activate-form').checkValidity()") is False
    mv.refresh_from_db()
    assert mv.status == ModelStatus.CANDIDATE

    browser.find_element(By.ID, "activation-reason").send_keys("Pilot at the study site; tiers checked by hand")
    browser.find_element(By.ID, "activation-confirm").click()
    submit_and_wait(browser, browser.find_element(By.ID, "activation-submit"))
    assert f"/models/{mv.pk}/" in browser.current_url
    mv.refresh_from_db()
    assert mv.status == ModelStatus.ACTIVE
    log = browser.find_element(By.ID, "activation-log").text
    assert "Pilot at the study site; tiers checked by hand" in log and "fewer than 20 photos" in log
    assert ModelActivation.objects.get(model_version=mv).override_reason.startswith("Pilot at the study site")
