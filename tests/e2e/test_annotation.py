"""Browser test of the annotation workspace in headless Chromium: an annotator draws a
box with the mouse, labels it, saves, reloads and finds it; a reviewer of the other
group rejects it with a comment pinned to the box; the annotator sees the comment."""

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from annotation.models import AnnotationStatus, Box, PhotoAnnotation, ReviewComment
from annotation.review import group_set_members, groups_split
from derm_portal import roles
from tests.annotation.test_proposals import skin_photo
from tests.factories import CaseFactory, UserFactory, make_photo

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _wait(browser, cond, timeout=15):
    return WebDriverWait(browser, timeout).until(lambda d: cond(d))


def _open_editor(browser, url, photo_pk):
    browser.get(url)
    _wait(browser, lambda d: d.find_element(By.ID, "ws-canvas").get_attribute("data-loaded") == str(photo_pk))


def _login(login, browser, user):
    """Log in through the form and wait until the login has landed (the fixture only clicks)."""
    login(user)
    _wait(browser, lambda d: "/accounts/login/" not in d.current_url)


def _status(browser):
    return browser.find_element(By.ID, "ws-status").text


def test_draw_save_reload_then_reject_with_comment(browser, live_server, login, taxonomy):
    admin = UserFactory(role=roles.ADMIN)
    ann_user = UserFactory(username="anna", role=roles.ANNOTATOR)
    reviewer = UserFactory(username="rob", role=roles.ANNOTATOR)
    case = CaseFactory()
    photo = make_photo(case, size=(800, 600), color=(200, 150, 130))
    ga = group_set_members(name="Group A", members=[ann_user], by=admin)
    gb = group_set_members(name="Group B", members=[reviewer], by=admin)
    groups_split(group_a=ga, group_b=gb, photos=case.photos.all(), by=admin)
    assert photo.assignment.group == ga

    # --- annotator draws a box and labels it melanoma (key 2), saves
    _login(login, browser, ann_user)
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photo.pk}/", photo.pk)
    canvas = browser.find_element(By.ID, "ws-canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -120, -90).click_and_hold().move_by_offset(
        60, 40
    ).move_by_offset(120, 100).release().perform()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ws-boxes li")) == 1)
    ActionChains(browser).send_keys("2").perform()  # 2nd sub-class of the HAM10000 taxonomy: mel
    assert "Melanoma" in browser.find_element(By.CSS_SELECTOR, "#ws-boxes li").text
    browser.find_element(By.ID, "ws-save").click()
    _wait(browser, lambda d: _status(d) == "Saved.")

    box = Box.objects.get(photo=photo)
    assert box.sub_class.code == "mel" and box.annotator == ann_user
    assert (box.image_width, box.image_height) == (800, 600)
    assert 0 <= box.x0 < box.x1 <= 800 and 0 <= box.y0 < box.y1 <= 600
    assert box.x1 - box.x0 > 100 and box.y1 - box.y0 > 80  # 180x140 screen px at a fit scale < 1.5

    # --- reload: the box comes back from the server
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photo.pk}/", photo.pk)
    items = browser.find_elements(By.CSS_SELECTOR, "#ws-boxes li")
    assert len(items) == 1 and "Melanoma" in items[0].text
    assert f"{box.x0:g},{box.y0:g}" in items[0].text  # the editor draws whole pixels
    browser.find_element(By.ID, "ws-submit").click()
    _wait(browser, lambda d: PhotoAnnotation.objects.get(photo=photo).status == AnnotationStatus.ANNOTATED)

    # --- reviewer from the other group rejects it with a comment pinned to the box
    browser.delete_all_cookies()
    _login(login, browser, reviewer)
    browser.get(f"{live_server.url}/annotate/?queue=review")
    browser.find_element(By.CSS_SELECTOR, "#queue a.button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "ws-canvas").get_attribute("data-loaded") == str(photo.pk))
    browser.find_element(By.CSS_SELECTOR, "#ws-boxes li").click()
    browser.find_element(By.ID, "ws-review-comment").send_keys("Box cuts the lower border of the lesion")
    browser.find_element(By.ID, "ws-reject").click()
    _wait(browser, lambda d: "Rejected" in _status(d))
    annotation = PhotoAnnotation.objects.get(photo=photo)
    assert annotation.status == AnnotationStatus.REJECTED and annotation.reviewer == reviewer
    comment = ReviewComment.objects.get(annotation=annotation)
    assert comment.box_id == box.pk and comment.author == reviewer

    # --- the annotator finds the photo back in the queue with the comment visible
    browser.delete_all_cookies()
    _login(login, browser, ann_user)
    browser.get(f"{live_server.url}/annotate/")
    assert "rejected" in browser.find_element(By.ID, "queue").text.lower()
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photo.pk}/", photo.pk)
    comments = browser.find_element(By.ID, "ws-comments").text
    assert "Box cuts the lower border of the lesion" in comments and "rob" in comments
    assert "Rejected" in browser.find_element(By.ID, "ws-annotation-status").text
    assert browser.find_element(By.ID, "ws-save").is_enabled()


def test_keyboard_undo_zoom_and_next_photo_without_reload(browser, live_server, login, taxonomy):
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.keys import Keys

    user = UserFactory(role=roles.ANNOTATOR)
    case = CaseFactory()
    first = make_photo(case, size=(640, 480), color=(200, 150, 130))
    second = make_photo(case, size=(480, 640), color=(150, 100, 90))
    _login(login, browser, user)
    _open_editor(browser, f"{live_server.url}/annotate/photo/{first.pk}/", first.pk)
    browser.execute_script("window.__samePage = true")
    canvas = browser.find_element(By.ID, "ws-canvas")
    n_boxes = lambda: browser.execute_script("return window.dermWorkspace.boxes.length")  # noqa: E731
    ActionChains(browser).move_to_element_with_offset(canvas, -60, -60).click_and_hold().move_by_offset(
        50, 50
    ).move_by_offset(50, 40).release().perform()
    assert n_boxes() == 1
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert n_boxes() == 0
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("y").key_up(Keys.CONTROL).perform()
    assert n_boxes() == 1
    ActionChains(browser).send_keys(Keys.DELETE).perform()
    assert n_boxes() == 0
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert n_boxes() == 1
    ActionChains(browser).key_down(Keys.SHIFT).send_keys("1").key_up(Keys.SHIFT).perform()  # meta-class only
    ActionChains(browser).send_keys("d").perform()  # labelImg's "difficult"
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("d").key_up(Keys.CONTROL).perform()  # duplicate
    assert n_boxes() == 2
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert n_boxes() == 1
    scale = browser.execute_script("return window.dermWorkspace.scale")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -200).perform()
    assert browser.execute_script("return window.dermWorkspace.scale") > scale

    ActionChains(browser).send_keys("n").perform()  # saves the changed draft, opens the next photo in place
    _wait(browser, lambda d: canvas.get_attribute("data-loaded") == str(second.pk))
    assert browser.execute_script("return window.__samePage") is True
    assert browser.current_url.startswith(f"{live_server.url}/annotate/photo/{second.pk}/")
    box = Box.objects.get(photo=first)
    assert box.sub_class is None and box.meta_class.code == "melanocytic" and box.difficult and not box.truncated
    ActionChains(browser).send_keys("p").perform()
    _wait(browser, lambda d: canvas.get_attribute("data-loaded") == str(first.pk))
    assert browser.execute_script("return window.dermWorkspace.boxes[0].id") == box.pk


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_read_only_buttons_look_disabled_queue_count_follows_submissions_and_pin_spares_label(
    browser, live_server, login, taxonomy
):
    from annotation import boxes as box_services
    from annotation.review import review_reject

    admin = UserFactory(role=roles.ADMIN)
    ann_user = UserFactory(role=roles.ANNOTATOR)
    reviewer = UserFactory(role=roles.ANNOTATOR)
    ga = group_set_members(name="Group A", members=[ann_user], by=admin)
    gb = group_set_members(name="Group B", members=[reviewer], by=admin)
    case = CaseFactory()
    photos = [make_photo(case, size=(640, 480), color=(200, 150 - 20 * i, 130)) for i in range(3)]
    groups_split(group_a=ga, group_b=gb, photos=case.photos.all(), by=admin)
    # a narrow box (its label is wider than the box) rejected with a comment pinned to it
    narrow = box_services.annotation_save(
        photo=photos[2],
        user=ann_user,
        submit=True,
        boxes=[{"x0": 300, "y0": 200, "x1": 312, "y1": 260, "label": "mel"}],
    )
    review_reject(annotation=narrow, by=reviewer, comment="Too tight", box_id=narrow.boxes.get().pk)

    _login(login, browser, ann_user)
    browser.get(f"{live_server.url}/annotate/")
    assert "My photos to annotate (3)" in browser.find_element(By.ID, "tab-annotate").text
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photos[0].pk}/", photos[0].pk)
    total = lambda d: d.find_element(By.ID, "ws-queue-total").text  # noqa: E731
    _wait(browser, lambda d: total(d) == "3")
    canvas = browser.find_element(By.ID, "ws-canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -60, -60).click_and_hold().move_by_offset(
        50, 50
    ).move_by_offset(50, 40).release().perform()
    browser.find_element(By.ID, "ws-submit").click()
    _wait(browser, lambda d: total(d) == "2")

    # the submitted photo is read-only, and its buttons look it
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photos[0].pk}/", photos[0].pk)
    for bid in ("ws-save", "ws-submit", "ws-undo", "ws-delete"):
        button = browser.find_element(By.ID, bid)
        assert not button.is_enabled()
        assert float(button.value_of_css_property("opacity")) < 0.6, bid
        assert button.value_of_css_property("cursor") == "not-allowed", bid
    assert float(browser.find_element(By.ID, "ws-fit").value_of_css_property("opacity")) == 1.0
    browser.get(f"{live_server.url}/annotate/")
    assert "My photos to annotate (2)" in browser.find_element(By.ID, "tab-annotate").text

    # the review comment's pin does not cover the box's label
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photos[2].pk}/", photos[2].pk)
    import json

    layout = json.loads(browser.find_element(By.ID, "ws-canvas").get_attribute("data-layout"))
    assert len(layout["labels"]) == 1 and len(layout["pins"]) == 1
    assert not _overlaps(layout["labels"][0], layout["pins"][0])


def test_draft_is_autosaved_with_a_visible_saved_state(browser, live_server, login, taxonomy, settings):
    import time

    settings.ANNOTATION_AUTOSAVE_SECONDS = 1
    user, other = UserFactory(role=roles.ANNOTATOR), UserFactory(role=roles.ANNOTATOR)
    case = CaseFactory()
    photo = make_photo(case, size=(640, 480), color=(190, 140, 120))
    prefilled = make_photo(case, size=(640, 480), color=(90, 40, 20))
    from annotation import boxes as box_services

    box_services.annotation_save(
        photo=prefilled, user=other, boxes=[{"x0": 5, "y0": 5, "x1": 60, "y1": 60, "label": "nv"}]
    )
    _login(login, browser, user)
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photo.pk}/", photo.pk)
    state = lambda d: d.find_element(By.ID, "ws-saved-state")  # noqa: E731
    _wait(browser, lambda d: state(d).get_attribute("data-state") == "saved")
    canvas = browser.find_element(By.ID, "ws-canvas")
    ActionChains(browser).move_to_element_with_offset(canvas, -60, -60).click_and_hold().move_by_offset(
        50, 50
    ).move_by_offset(50, 40).release().perform()
    assert state(browser).get_attribute("data-state") == "unsaved" and state(browser).text == "Unsaved changes"
    # no click on Save: the draft reaches the server by itself and the state says so
    _wait(browser, lambda d: state(d).text.startswith("Autosaved"))
    ann = PhotoAnnotation.objects.get(photo=photo, annotator=user)
    assert ann.status == AnnotationStatus.TO_ANNOTATE and ann.boxes.count() == 1
    assert state(browser).get_attribute("data-state") == "saved"
    # merely opening a pre-filled photo does not save (and so does not claim) it
    _open_editor(browser, f"{live_server.url}/annotate/photo/{prefilled.pk}/", prefilled.pk)
    time.sleep(2.5)  # longer than the autosave delay: nothing may be saved
    assert not PhotoAnnotation.objects.filter(photo=prefilled, annotator=user).exists()
    assert state(browser).get_attribute("data-state") == "unsaved"


def test_accept_the_models_proposed_box_with_one_key_and_it_autosaves(
    browser, live_server, login, taxonomy, settings, tmp_path
):
    import io
    import os
    from pathlib import Path

    import numpy as np
    from selenium.webdriver.common.keys import Keys

    from annotation import services
    from tests.annotation.test_proposals import box_iou, stored_prediction

    settings.ANNOTATION_AUTOSAVE_SECONDS = 1
    derm = UserFactory(role=roles.DERMATOLOGIST)
    lesion = (300, 150, 480, 330)  # on a 640x480 photo; the map lights only its upper right part
    buf = io.BytesIO()
    skin_photo((640, 480), [lesion]).save(buf, "PNG")
    photo = services.photo_attach(case=CaseFactory(), data=buf.getvalue(), filename="lesion.png", run_hooks=False)
    cam = np.zeros((32, 32), np.float32)
    cam[10:15, 20:26] = 0.9  # centre square x 80..560, 15 px cells: x 380..470, y 150..225
    stored_prediction(photo, cam)
    _login(login, browser, derm)
    _open_editor(browser, f"{live_server.url}/annotate/photo/{photo.pk}/", photo.pk)
    proposal = browser.execute_script("return window.dermWorkspace.data.proposal")
    corners = (proposal["x0"], proposal["y0"], proposal["x1"], proposal["y1"])
    assert proposal["source"] == "outline" and box_iou(corners, lesion) > 0.85
    assert proposal["label"] == "mel" and browser.find_elements(By.CSS_SELECTOR, "#ws-boxes li") == []
    shots = Path(os.environ.get("DERM_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "proposed-box.png"))
    browser.find_element(By.ID, "ws-canvas").click()
    ActionChains(browser).send_keys("a").perform()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ws-boxes li")) == 1)
    assert "Melanoma" in browser.find_element(By.CSS_SELECTOR, "#ws-boxes li").text
    _wait(browser, lambda d: d.find_element(By.ID, "ws-saved-state").text.startswith("Autosaved"))
    box = Box.objects.get(photo=photo)
    assert (box.x0, box.y0, box.x1, box.y1, box.sub_class.code, box.origin) == (*corners, "mel", "proposed")
    # editing makes it the annotator's own
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    _wait(browser, lambda d: Box.objects.get(photo=photo).x0 == corners[0] + 1)
    assert Box.objects.get(photo=photo).origin == "drawn"
