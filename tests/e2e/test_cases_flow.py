"""Browser: a dermatologist creates a case with two photos, adds a third by the drop
zone (the gallery updates without a reload), records a histopathology-confirmed label
and sees it with its source and history. Screenshots of the main pages are written to
$DERM_SCREENSHOT_DIR (or the test's tmp dir) for a person to look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from annotation.models import Case, LabelChange
from derm_portal import roles

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def lesion_photo(path: Path, *, seed: int, size=(640, 480)) -> Path:
    """A skin-coloured photo with a brown, irregular lesion (drawn, no download)."""
    img = Image.new("RGB", size, (224 - seed * 6, 180 - seed * 4, 160 - seed * 3))
    draw = ImageDraw.Draw(img)
    cx, cy = size[0] // 2 + seed * 15, size[1] // 2 - seed * 10
    for i, (rx, ry, colour) in enumerate(((120, 90, (120, 75, 55)), (80, 62, (92, 55, 40)), (36, 30, (60, 36, 28)))):
        draw.ellipse((cx - rx - i * 4, cy - ry, cx + rx, cy + ry + i * 6), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(3))
    img.save(path, "JPEG", quality=90)
    return path


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("DERM_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(browser, name):
        browser.save_screenshot(str(folder / f"{name}.png"))

    take.folder = folder
    return take


def _wait(browser, seconds=15):
    return WebDriverWait(browser, seconds)


def _images_loaded(browser) -> int:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#gallery img')).filter(i => i.complete && i.naturalWidth > 0).length"
    )


def test_dermatologist_case_flow(live_server, browser, login, users, taxonomy, tmp_path, shots):
    derm = users[roles.DERMATOLOGIST]
    photos = [lesion_photo(tmp_path / f"lesion-{i}.jpg", seed=i) for i in range(3)]
    login(derm)
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".userbox")))

    # New case with two photos through the form's file input.
    browser.get(live_server.url + "/cases/new/")
    shots(browser, "1-new-case-form")
    browser.find_element(By.NAME, "patient_code").send_keys("PSN-E2E-01")
    Select(browser.find_element(By.NAME, "sex")).select_by_value("female")
    browser.find_element(By.NAME, "birth_year").send_keys("1961")
    browser.find_element(By.NAME, "body_site").send_keys("left shoulder")
    browser.find_element(By.NAME, "clinical_history").send_keys("Changing pigmented lesion for 6 months.")
    browser.find_element(By.CSS_SELECTOR, "#create-dropzone input[type=file]").send_keys(
        "\n".join(str(p) for p in photos[:2])
    )
    listed = browser.find_elements(By.CSS_SELECTOR, "#create-dropzone .file-list li")
    assert [li.text.split(" (")[0] for li in listed] == ["lesion-0.jpg", "lesion-1.jpg"]
    browser.find_element(By.CSS_SELECTOR, "#case-create-form button[type=submit]").click()

    _wait(browser).until(EC.presence_of_element_located((By.ID, "gallery")))
    case = Case.objects.get(patient__code="PSN-E2E-01")
    assert browser.current_url.endswith(f"/cases/{case.pk}/")
    assert "Case created with 2 photo(s)." in browser.find_element(By.CSS_SELECTOR, ".messages").text
    _wait(browser).until(lambda b: _images_loaded(b) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery figure.thumb")) == 2

    # One more photo by the drop zone's file input: no page reload.
    browser.execute_script("window.__noReload = 'still here';")
    browser.find_element(By.CSS_SELECTOR, "#dropzone input[type=file]").send_keys(str(photos[2]))
    _wait(browser).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery figure.thumb")) == 3)
    _wait(browser).until(lambda b: _images_loaded(b) == 3)
    assert browser.execute_script("return window.__noReload") == "still here"
    result = browser.find_element(By.CSS_SELECTOR, "#dropzone .upload-results li.ok").text
    assert "lesion-2.jpg stored (640×480)" in result
    assert browser.find_element(By.ID, "photo-count").text == "3"
    captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
    assert captions == ["Clinical · 640×480"] * 3
    assert case.photos.count() == 3

    # A refused file is reported under the drop zone, the gallery stays as it is.
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo at all")
    browser.find_element(By.CSS_SELECTOR, "#dropzone input[type=file]").send_keys(str(bad))
    err = _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#dropzone .upload-results li.err")))
    assert err.text.startswith("✗ notes.jpg: ") and "not an image" in err.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery figure.thumb")) == 3
    # A file over the size limit is refused in the browser, before it is sent.
    from tests.annotation.hostile.make_corpus import oversize_jpeg

    big = tmp_path / "huge.jpg"
    big.write_bytes(oversize_jpeg())
    browser.find_element(By.CSS_SELECTOR, "#dropzone input[type=file]").send_keys(str(big))
    errors = _wait(browser).until(
        lambda b: [
            li.text
            for li in b.find_elements(By.CSS_SELECTOR, "#dropzone .upload-results li.err")
            if "huge.jpg" in li.text
        ]
    )
    assert errors == ["✗ huge.jpg: the file is 26 MB; the limit is 25 MB."]
    assert case.photos.count() == 3
    shots(browser, "2a-upload-results")

    # Record a histopathology-confirmed diagnosis.
    form = browser.find_element(By.ID, "label-form")
    assert Select(form.find_element(By.NAME, "source")).first_selected_option.get_attribute("value") == ""
    Select(form.find_element(By.NAME, "sub_class")).select_by_visible_text("Melanocytic › Melanoma (mel)")
    Select(form.find_element(By.NAME, "source")).select_by_value("histopathology")
    form.find_element(By.NAME, "report_text").send_keys("Superficial spreading melanoma, Breslow 0.4 mm.")
    form.find_element(By.NAME, "note").send_keys("pathology report received")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    card = _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".label-card.confirmed")))
    assert "Melanoma" in card.text and "Histopathology-confirmed" in card.text
    assert f"Signed by {derm.username}" in card.text and "Breslow 0.4 mm" in card.text
    assert "Confirmed" in browser.find_element(By.CSS_SELECTOR, "h1 .status").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#label-history tbody tr")
    assert len(rows) == 1
    cells = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
    assert cells[1] == derm.username and cells[2] == "Histopathology"
    assert cells[3].startswith("— → mel") and "pathology report received" in cells[3]
    assert LabelChange.objects.filter(case=case, new_sub_class__code="mel", changed_by=derm).exists()
    shots(browser, "2-case-detail")

    # The list shows the case as confirmed; the taxonomy page renders.
    browser.get(live_server.url + "/cases/?confirmed=yes")
    row = browser.find_element(By.CSS_SELECTOR, "table.grid tbody tr")
    assert "PSN-E2E-01" in row.text and "mel" in row.text and "histo ✓" in row.text and "3" in row.text
    shots(browser, "3-case-list")
    browser.get(live_server.url + "/taxonomy/")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".meta-node")) == 3
    shots(browser, "4-taxonomy")
    assert len(list(shots.folder.glob("*.png"))) >= 4
