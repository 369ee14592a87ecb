"""Boxes: validation, database constraints, saving/submitting, prefill, queues, the JSON
API and who may annotate."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.urls import reverse

from annotation import boxes
from annotation.models import AnnotationStatus, Box, MetaClass, PhotoAnnotation, SubClass
from derm_portal import roles
from tests.annotation.factories import BoxFactory, PhotoAnnotationFactory
from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def photo(taxonomy):
    return make_photo(CaseFactory(), size=(400, 300))


def test_valid_box_is_stored_in_original_pixels(photo, users):
    ann = boxes.annotation_save(
        photo=photo,
        user=users[roles.ANNOTATOR],
        boxes=[
            {"x0": 10.4, "y0": 20, "x1": 110.6, "y1": 300, "label": "mel"},
            {"x0": 0, "y0": 0, "x1": 400, "y1": 50, "label": "melanocytic"},  # meta-class only: unsure
        ],
    )
    b1, b2 = ann.boxes.order_by("id")
    # sub-pixel values are kept as sent (an imported box saved again from the editor stays as it was)
    assert (b1.x0, b1.y0, b1.x1, b1.y1, b1.image_width, b1.image_height) == (10.4, 20, 110.6, 300, 400, 300)
    assert b1.sub_class.code == "mel" and b1.meta_class.code == "melanocytic"
    assert b2.sub_class is None and b2.meta_class.code == "melanocytic"
    assert ann.status == AnnotationStatus.TO_ANNOTATE


@pytest.mark.parametrize(
    "box, field, text",
    [
        ({"x0": -1, "y0": 0, "x1": 10, "y1": 10, "label": "nv"}, "x0", "outside the photo"),
        ({"x0": 0, "y0": 0, "x1": 401, "y1": 10, "label": "nv"}, "x0", "outside the photo"),
        ({"x0": 0, "y0": 250, "x1": 10, "y1": 301, "label": "nv"}, "x0", "outside the photo"),
        ({"x0": 10, "y0": 0, "x1": 10, "y1": 10, "label": "nv"}, "x1", "empty box"),
        ({"x0": 0, "y0": 0, "x1": 10, "y1": 10, "label": "psoriasis"}, "label", "not a sub-class or meta-class"),
        ({"x0": 0, "y0": 0, "x1": 10, "y1": 10}, "label", "label (sub-class or meta-class) is required"),
        ({"x0": "a", "y0": 0, "x1": 10, "y1": 10, "label": "nv"}, "x0", "not a number"),
    ],
)
def test_invalid_boxes_are_refused_with_a_clear_error(photo, users, box, field, text):
    good = {"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "nv"}
    with pytest.raises(boxes.AnnotationError) as exc:
        boxes.annotation_save(photo=photo, user=users[roles.ANNOTATOR], boxes=[good, box])
    err = exc.value.errors[0]
    assert err["box"] == 1 and err["field"] == field and text in err["message"] and err["message"].startswith("Box 2")
    assert not Box.objects.exists()  # nothing half-written


def test_database_constraints_keep_boxes_inside_and_labelled(photo, users):
    ann = PhotoAnnotationFactory(photo=photo, annotator=users[roles.ANNOTATOR])
    nv = SubClass.objects.get(code="nv")
    common = dict(annotation=ann, image_width=400, image_height=300)
    for bad in (
        dict(x0=0, y0=0, x1=401, y1=10, sub_class=nv),
        dict(x0=5, y0=0, x1=5, y1=10, sub_class=nv),
        dict(x0=-1, y0=0, x1=3, y1=10, sub_class=nv),
        dict(x0=0, y0=0, x1=10, y1=10),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            BoxFactory(**common, **bad)
    BoxFactory(**common, x0=0, y0=0, x1=400, y1=300, meta_class=MetaClass.objects.get(code="melanocytic"))


def test_save_updates_boxes_in_place_so_comments_stay_pinned(photo, users):
    user = users[roles.ANNOTATOR]
    ann = boxes.annotation_save(
        photo=photo,
        user=user,
        boxes=[
            {"x0": 1, "y0": 1, "x1": 50, "y1": 50, "label": "nv"},
            {"x0": 60, "y0": 60, "x1": 90, "y1": 90, "label": "bcc"},
        ],
    )
    first, second = ann.boxes.order_by("id")
    boxes.annotation_save(
        photo=photo, user=user, boxes=[{"id": first.pk, "x0": 2, "y0": 2, "x1": 52, "y1": 52, "label": "mel"}]
    )
    remaining = list(ann.boxes.all())
    assert [b.pk for b in remaining] == [first.pk]
    assert (remaining[0].x0, remaining[0].sub_class.code) == (2, "mel")
    assert not Box.objects.filter(pk=second.pk).exists()


def test_submit_locks_and_needs_boxes_or_exclusion(photo, users):
    user = users[roles.ANNOTATOR]
    with pytest.raises(boxes.AnnotationError, match="at least one box"):
        boxes.annotation_save(photo=photo, user=user, boxes=[], submit=True)
    with pytest.raises(boxes.AnnotationError, match="Pick why"):
        boxes.annotation_save(photo=photo, user=user, boxes=[], excluded=True, exclusion_reason="", submit=True)
    ann = boxes.annotation_save(
        photo=photo, user=user, boxes=[], excluded=True, exclusion_reason="medication", submit=True
    )
    assert ann.status == AnnotationStatus.ANNOTATED and ann.excluded and ann.exclusion_reason == "medication"
    assert ann.submitted_at is not None
    with pytest.raises(boxes.AnnotationError, match="can no longer be edited"):
        boxes.annotation_save(photo=photo, user=user, boxes=[{"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "nv"}])


def test_status_machine_allows_only_the_documented_moves(photo, users):
    ann = PhotoAnnotation(photo=photo, annotator=users[roles.ANNOTATOR])
    S = AnnotationStatus
    allowed = {
        (S.TO_ANNOTATE, S.ANNOTATED),
        (S.ANNOTATED, S.ACCEPTED),
        (S.ANNOTATED, S.REJECTED),
        (S.REJECTED, S.ANNOTATED),
        (S.ACCEPTED, S.TO_ANNOTATE),
    }
    for a in S.values:
        for b in S.values:
            ann.status = a
            if (a, b) in allowed:
                boxes.status_transition(annotation=ann, to=b)
                assert ann.status == b
            else:
                with pytest.raises(boxes.AnnotationError):
                    boxes.status_transition(annotation=ann, to=b)


@pytest.mark.parametrize("role", [roles.READER, roles.COORDINATOR])
def test_readers_and_coordinators_cannot_annotate(photo, make_user, role):
    with pytest.raises(PermissionDenied):
        boxes.annotation_save(photo=photo, user=make_user(role), boxes=[])


def test_prefill_from_previous_annotation_but_not_on_gold_photos(photo, users, make_user):
    other = make_user(roles.ANNOTATOR)
    boxes.annotation_save(photo=photo, user=other, boxes=[{"x0": 1, "y0": 1, "x1": 50, "y1": 50, "label": "nv"}])
    src = boxes.prefill_source(photo=photo, user=users[roles.ANNOTATOR])
    assert src is not None and src.annotator == other
    assert boxes.prefill_source(photo=photo, user=other) is None  # never from yourself
    PhotoAnnotation.objects.filter(annotator=other).update(is_gold=True, status=AnnotationStatus.ACCEPTED)
    assert boxes.prefill_source(photo=photo, user=users[roles.ANNOTATOR]) is None


def test_queue_to_annotate_filters_by_class_and_status(taxonomy, users):
    user = users[roles.ANNOTATOR]
    from annotation.services import label_record

    c1, c2 = CaseFactory(), CaseFactory()
    p1, p2 = make_photo(c1, color=(10, 10, 10)), make_photo(c2, color=(20, 20, 20))
    label_record(case=c1, sub_class=SubClass.objects.get(code="mel"), source="histopathology", by=users[roles.ADMIN])
    assert set(boxes.queue_to_annotate(user=user)) == {p1, p2}
    assert list(boxes.queue_to_annotate(user=user, label="mel")) == [p1]
    assert list(boxes.queue_to_annotate(user=user, label="melanocytic")) == [p1]
    boxes.annotation_save(
        photo=p2, user=user, boxes=[{"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "bcc"}], submit=True
    )
    assert list(boxes.queue_to_annotate(user=user)) == [p1]
    assert list(boxes.queue_to_annotate(user=user, status="annotated")) == [p2]
    assert list(boxes.queue_to_annotate(user=user, status="annotated", label="bcc")) == [p2]
    # somebody else's queue: p2 is taken (annotated by someone) and p1 is free
    assert list(boxes.queue_to_annotate(user=users[roles.DERMATOLOGIST])) == [p1]


# --------------------------------------------------------------------------- API and pages
def test_api_save_and_read_back(client, photo, users):
    client.force_login(users[roles.ANNOTATOR])
    url = reverse("workspace-boxes", args=[photo.pk])
    r = client.put(
        url, {"boxes": [{"x0": 5, "y0": 6, "x1": 70, "y1": 80, "label": "bkl"}]}, content_type="application/json"
    )
    assert r.status_code == 200, r.content
    data = r.json()
    assert data["annotation"]["boxes"][0] | {"id": 0} == {
        "id": 0,
        "x0": 5,
        "y0": 6,
        "x1": 70,
        "y1": 80,
        "label": "bkl",
        "sub_class": "bkl",
        "meta_class": "keratinocytic",
        "difficult": False,
        "truncated": False,
        "origin": "drawn",
        "source_box": None,
    }
    r = client.get(reverse("workspace-detail", args=[photo.pk]))
    assert r.json()["annotation"]["boxes"][0]["label"] == "bkl" and r.json()["editable"] is True
    r = client.put(
        url, {"boxes": [{"x0": 5, "y0": 6, "x1": 700, "y1": 80, "label": "bkl"}]}, content_type="application/json"
    )
    assert r.status_code == 400
    assert "outside the photo (400×300 pixels)" in r.json()["errors"][0]["message"]
    assert Box.objects.get().x1 == 70  # the failed save changed nothing


def test_api_queue_lists_photos_in_order(client, taxonomy, users):
    case = CaseFactory()
    p1, p2 = make_photo(case, color=(1, 1, 1)), make_photo(case, color=(2, 2, 2))
    client.force_login(users[roles.ANNOTATOR])
    items = client.get(reverse("workspace-queue") + "?queue=annotate").json()["items"]
    assert [i["photo"] for i in items] == [p1.pk, p2.pk]
    assert items[0]["url"] == reverse("annotation:workspace_photo", args=[p1.pk])


@pytest.mark.parametrize(
    "role, allowed",
    [
        (roles.ANNOTATOR, True),
        (roles.DERMATOLOGIST, True),
        (roles.ADMIN, True),
        (roles.COORDINATOR, False),
        (roles.READER, False),
        (None, False),
    ],
)
def test_workspace_permissions_per_role(client, photo, make_user, role, allowed):
    client.force_login(make_user(role))
    pages = [
        reverse("annotation:workspace"),
        reverse("annotation:workspace_photo", args=[photo.pk]),
        reverse("annotation:workspace_io"),
        reverse("annotation:workspace_crops"),
    ]
    for url in pages:
        assert client.get(url).status_code == (200 if allowed else 403), url
    r = client.put(
        reverse("workspace-boxes", args=[photo.pk]),
        {"boxes": [{"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "nv"}]},
        content_type="application/json",
    )
    assert r.status_code == (200 if allowed else 403)
    assert Box.objects.exists() == allowed
    assert client.get(reverse("workspace-queue")).status_code == (200 if allowed else 403)


def test_editor_page_carries_the_taxonomy_and_api(client, photo, users):
    client.force_login(users[roles.ANNOTATOR])
    html = client.get(reverse("annotation:workspace_photo", args=[photo.pk])).content.decode()
    assert 'id="ws-canvas"' in html and '"code": "mel"' in html and reverse("workspace-detail", args=[photo.pk]) in html


def test_case_page_panel_shows_annotations_and_links_for_annotators(client, photo, users):
    boxes.annotation_save(
        photo=photo,
        user=users[roles.ANNOTATOR],
        boxes=[{"x0": 1, "y0": 1, "x1": 9, "y1": 9, "label": "nv"}],
        submit=True,
    )
    url = reverse("annotation:case_detail", args=[photo.case_id])
    client.force_login(users[roles.DERMATOLOGIST])
    html = client.get(url).content.decode()
    assert 'id="lesion-boxes-panel"' in html and "Annotated (waiting for review)" in html
    assert reverse("annotation:workspace_photo", args=[photo.pk]) in html
    from annotation.services import label_record  # coordinators see confirmed cases only

    label_record(
        case=photo.case,
        sub_class=SubClass.objects.get(code="nv"),
        source="histopathology",
        by=users[roles.DERMATOLOGIST],
    )
    client.force_login(users[roles.COORDINATOR])  # sees clinical data, does not annotate
    html = client.get(url).content.decode()
    assert 'id="lesion-boxes-panel"' in html and reverse("annotation:workspace_photo", args=[photo.pk]) not in html
