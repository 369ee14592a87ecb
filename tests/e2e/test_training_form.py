"""Browser test (headless Chromium): a dermatologist starts a training run from the training page,
choosing how the training photos simulate other cameras; the run is queued with that augmentation
and its page opens. The queue itself is not started (the worker tests run real training)."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from derm_portal import roles
from inference import jobs
from inference.models import TrainingRun
from inference.views import CAMERA_PRESETS
from tests.e2e.pages import submit_and_wait
from tests.inference.test_training import labelled_cases  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_training_form_queues_run_with_camera_preset(browser, live_server, login, labelled_cases, users, monkeypatch):
    monkeypatch.setattr(jobs, "enqueue_training", lambda pk: None)
    login(users[roles.DERMATOLOGIST])
    WebDriverWait(browser, 30).until(lambda d: "/accounts/login" not in d.current_url)
    browser.get(f"{live_server.url}/training/")
    form = browser.find_element(By.ID, "training-form")
    cameras = Select(form.find_element(By.NAME, "cameras"))
    assert cameras.first_selected_option.text == "engine default: blur up to 1 px, noise up to 0.03"
    assert [o.text for o in cameras.options][1:] == [label for label, _ in CAMERA_PRESETS.values()]
    form.find_element(By.CSS_SELECTOR, "input[name=source_set][value=confirmed_consensus]").click()
    form.find_element(By.NAME, "name").send_keys("clinic cameras")
    form.find_element(By.NAME, "epochs").send_keys("1")
    cameras.select_by_visible_text("blur and noise on half the photos")
    submit_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "queued" in browser.find_element(By.TAG_NAME, "body").text
    run = TrainingRun.objects.get()
    assert browser.current_url.endswith(f"/training/{run.pk}/")
    assert run.name == "clinic cameras" and run.label_sources == ["consensus", "histopathology"]
    assert run.config == {"epochs": 1, "augment": {"optics_p": 0.5}}
