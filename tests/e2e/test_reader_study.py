"""Browser: a coordinator sets up a reader study with two readers through the pages, both readers
log in and read every case, and the results page draws the plotly ROC chart with traces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from derm_portal import roles
from reports.models import ReaderStudy, Reading
from tests.e2e.pages import submit_and_wait
from tests.inference.factories import PredictionFactory
from tests.reports.factories import make_confirmed_case, make_model_version

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _shot(browser, tmp_path, name):
    folder = Path(os.environ.get("DERM_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"reader-study-{name}.png"))


def _login_as(browser, login, user):
    """Log in through the form and wait for the redirect, so the next browser.get cannot race it."""
    browser.delete_all_cookies()
    login(user)
    WebDriverWait(browser, 15).until(lambda b: "/accounts/login/" not in b.current_url)


def _read_everything(browser, live_server, login, user, tmp_path):
    _login_as(browser, login, user)
    browser.get(live_server.url + "/reading/")
    submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Start"))
    for k in range(50):
        if "/case/" not in browser.current_url:
            break
        WebDriverWait(browser, 10).until(
            lambda b: b.execute_script(
                "const i=document.querySelector('.study-photo.active'); return i && i.complete && i.naturalWidth > 0"
            )
        )
        if k == 0:
            _shot(browser, tmp_path, f"reading-{user.username}")
        radios = browser.find_elements(By.CSS_SELECTOR, "input[name=answer]")
        radios[k % 2].click()
        browser.find_element(By.CSS_SELECTOR, "input[name=confidence][value='4']").click()
        submit_and_wait(browser, browser.find_element(By.ID, "submit-answer"))
    assert browser.current_url.endswith("/reading/")


def test_coordinator_sets_up_two_readers_read_results_chart(
    live_server, browser, login, users, taxonomy, make_user, tmp_path
):
    derm, coord = users[roles.DERMATOLOGIST], users[roles.COORDINATOR]
    reader_a = users[roles.READER]
    reader_b = make_user(roles.READER, username="reader-b", first_name="Bea", last_name="Second")
    truths = ["mel", "nv", "mel", "bkl"]
    cases = [
        make_confirmed_case(sub_code=t, taxonomy=taxonomy, by=derm, i=i, external_id=f"E2E-{i}")
        for i, t in enumerate(truths)
    ]
    mv = make_model_version(taxonomy, name="e2e model")
    for case, p in zip(cases, [0.9, 0.2, 0.6, 0.3]):
        for photo in case.photos.all():
            PredictionFactory(
                photo=photo,
                model_version=mv,
                ranked=[{"sub_class": "mel", "probability": p}, {"sub_class": "nv", "probability": 1 - p}],
            )

    _login_as(browser, login, coord)
    browser.get(live_server.url + "/studies/new/")
    browser.find_element(By.NAME, "title").send_keys("Melanoma e2e study")
    Select(browser.find_element(By.NAME, "positive_codes")).select_by_value("mel")
    Select(browser.find_element(By.NAME, "confidence_scale")).select_by_value("five")
    Select(browser.find_element(By.NAME, "model_version")).select_by_visible_text(str(mv))
    submit_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "#study-form button[type=submit]"))
    assert "/studies/" in browser.current_url and "Melanoma e2e study" in browser.page_source
    submit_and_wait(browser, browser.find_element(By.ID, "add-cases"))
    assert "4 case(s) added" in browser.page_source
    for user, level in ((reader_a, "resident"), (reader_b, "expert")):
        Select(browser.find_element(By.NAME, "user")).select_by_value(str(user.pk))
        Select(browser.find_element(By.NAME, "experience")).select_by_value(level)
        submit_and_wait(browser, browser.find_element(By.ID, "invite"))
        assert "Reader invited" in browser.page_source
    submit_and_wait(browser, browser.find_element(By.ID, "refresh-model"))
    assert "model output for 4" in browser.page_source
    _shot(browser, tmp_path, "setup")
    submit_and_wait(browser, browser.find_element(By.ID, "open-study"))
    study = ReaderStudy.objects.get(title="Melanoma e2e study")
    assert study.status == "open"

    _read_everything(browser, live_server, login, reader_a, tmp_path)
    _read_everything(browser, live_server, login, reader_b, tmp_path)
    assert Reading.objects.filter(study_reader__study=study, answered_at__isnull=False).count() == 8

    _login_as(browser, login, coord)
    browser.get(live_server.url + f"/studies/{study.pk}/results/")
    try:
        WebDriverWait(browser, 60).until(
            lambda b: b.execute_script(
                "const d=document.getElementById('roc-figure-0-div'); return d && d.data && d.data.length > 0"
            )
        )
    except Exception:
        _shot(browser, tmp_path, "results-timeout")
        state = browser.execute_script(
            "return [typeof window.Plotly, document.readyState, location.href, document.title]"
        )
        raise AssertionError(f"no plotly traces: {state}")
    traces = browser.execute_script("return document.getElementById('roc-figure-0-div').data.map(t => t.name)")
    assert any(t.startswith("Model: AUC 1.000") for t in traces), traces
    assert any(t.startswith("Readers: resident") for t in traces) and any(
        t.startswith("Readers: expert") for t in traces
    )
    assert any(t.startswith("Mean reader") for t in traces)
    assert browser.find_elements(By.CSS_SELECTOR, "#roc-figure-0-div .main-svg")
    assert "Readers vs model (MRMC)" in browser.page_source
    _shot(browser, tmp_path, "results")


def test_multiclass_study_read_in_the_browser_renders_results(
    live_server, browser, login, users, taxonomy, make_user, tmp_path
):
    """Sub-classes, no confidence scale, no model, read to the end through the pages: the results
    page renders (it used to fail on the empty MRMC cells) with one chart per class."""
    from tests.reports.test_study_flow import build_study

    reader_b = make_user(roles.READER, username="reader-mc", first_name="Multi", last_name="Class")
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=("mel", "mel", "nv", "nv", "bkl", "bkl"),
        question_type="multiclass",
        positive=(),
        confidence="none",
        model=False,
        readers=[(users[roles.READER], "resident"), (reader_b, "expert")],
    )
    for user in (users[roles.READER], reader_b):
        _login_as(browser, login, user)
        browser.get(live_server.url + "/reading/")
        submit_and_wait(browser, browser.find_element(By.LINK_TEXT, "Start"))
        for k in range(20):
            if "/case/" not in browser.current_url:
                break
            radios = browser.find_elements(By.CSS_SELECTOR, "input[name=answer]")
            radios[k % 3].click()
            submit_and_wait(browser, browser.find_element(By.ID, "submit-answer"))
        assert browser.current_url.endswith("/reading/")
        assert "6 / 6 cases" in browser.page_source
    assert Reading.objects.filter(study_reader__study=study, answered_at__isnull=False).count() == 12

    _login_as(browser, login, users[roles.COORDINATOR])
    browser.get(live_server.url + f"/studies/{study.pk}/results/")
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "const d=document.getElementById('roc-figure-0-div'); return d && d.data && d.data.length > 0"
        )
    )
    assert browser.find_element(By.ID, "class-table")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".roc-chart")) >= 3
    assert "Server Error" not in browser.page_source
    _shot(browser, tmp_path, "multiclass-results")
