"""Browser test (headless Chromium): a dermatologist uploads a photo on the case page with a tiny
active model; the ranked differential and the Grad-CAM toggle appear without a page reload, the
overlay image loads through its permission-checked URL and the opacity slider works."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from derm_portal import roles
from inference.models import Prediction
from tests.factories import image_bytes
from tests.inference.conftest import active_model, model_copy, tiny_model_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wait(browser, cond, timeout=30):
    return WebDriverWait(browser, timeout).until(lambda d: cond(d))


def test_upload_shows_differential_and_overlays_without_reload(
    browser, live_server, login, active_model, case, users, tmp_path
):
    photo_file = tmp_path / "lesion.jpg"
    photo_file.write_bytes(image_bytes("JPEG", (320, 240), (120, 70, 40)))
    login(users[roles.DERMATOLOGIST])
    _wait(browser, lambda d: "/accounts/login" not in d.current_url)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    panel = _wait(browser, lambda d: d.find_element(By.ID, "prediction-panel"))
    assert "No photos yet" in panel.text and "percentage points apart" in panel.text
    browser.execute_script("window.__noReload = 'still here';")

    browser.find_element(By.CSS_SELECTOR, "#dropzone input[type=file]").send_keys(str(photo_file))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".pp-photo[data-status=done] .pp-diff"))
    pred = Prediction.objects.get()
    block = browser.find_element(By.ID, f"prediction-photo-{pred.photo_id}")
    rows = block.find_elements(By.CSS_SELECTOR, ".pp-row")
    assert len(rows) == 7
    assert rows[0].get_attribute("data-sub") in [r["sub_class"] for r in pred.ranked]
    assert block.find_element(By.CSS_SELECTOR, ".pp-row .pp-rank").text == "#1" or "#1" in block.text
    assert {"Benign", "Low malignancy", "High malignancy"} & set(
        block.find_element(By.CSS_SELECTOR, ".pp-grade .grade").text.split("\n")
    )

    # heat maps: hidden until toggled; one at a time; opacity slider
    toggles = block.find_elements(By.CSS_SELECTOR, "input.ov-toggle")
    assert len(toggles) == 4
    overlays = block.find_elements(By.CSS_SELECTOR, "img.pp-overlay")
    assert all(not o.is_displayed() for o in overlays)
    toggles[0].click()
    shown = [o for o in overlays if o.is_displayed()]
    assert len(shown) == 1 and shown[0].get_attribute("data-overlay") == toggles[0].get_attribute("value")
    _wait(
        browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", shown[0]) > 0
    )
    toggles[3].click()
    shown = [o for o in overlays if o.is_displayed()]
    assert len(shown) == 1 and shown[0].get_attribute("data-overlay") == toggles[3].get_attribute("value")
    slider = block.find_element(By.CSS_SELECTOR, "input.ov-opacity")
    browser.execute_script(
        "arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider
    )
    assert float(shown[0].value_of_css_property("opacity")) == pytest.approx(0.25)
    assert browser.execute_script("return window.__noReload") == "still here"
