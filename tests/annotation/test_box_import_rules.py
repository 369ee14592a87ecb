"""Box imports keep nothing from a file none of whose boxes is accepted, and clip boxes
that reach past the photo's edge (as CVAT and Label Studio do) instead of refusing them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from annotation.interchange.coco import coco_import
from annotation.interchange.export import annotations_for_export, export_voc
from annotation.interchange.voc import voc_import
from annotation.models import Box, Case, Photo, PhotoAnnotation
from derm_portal import roles
from tests.annotation.test_voc_coco import photo_named, voc
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def media_files() -> int:
    root = Path(settings.MEDIA_ROOT)
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_command_creates_nothing_when_every_box_of_a_file_fails(admin, tmp_path):
    photo = photo_named("a.jpg", size=(200, 100))
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.xml").write_bytes(voc("a.jpg", [("nv", -50, 10, -5, 50, 0, 0), ("mel", 80, 60, 40, 20, 0, 0)]))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_boxes", str(src), annotator=admin.username, status="annotated", stdout=out, stderr=err)
    assert "1 file(s): 0 box(es) on 0 photo(s)" in out.getvalue()
    assert "none of the 2 object(s) could be imported, so nothing was stored for a.jpg" in err.getvalue()
    assert not PhotoAnnotation.objects.filter(photo=photo).exists()  # not "annotated, no lesion"
    assert export_voc(annotations_for_export(user=admin, statuses=["annotated"])) == {}


def test_a_file_without_objects_still_says_no_lesion(admin):
    photo = photo_named("a.jpg")
    rep = voc_import(files=[("a.xml", voc("a.jpg", []))], user=admin)
    assert (rep.photos, rep.boxes, rep.errors) == (1, 0, [])
    assert PhotoAnnotation.objects.get(photo=photo).boxes.count() == 0


def test_web_import_with_create_cases_creates_no_empty_case(admin, client):
    client.force_login(admin)
    files_before = media_files()
    resp = client.post(
        reverse("annotation:workspace_io"),
        {
            "action": "import_voc",
            "status": "annotated",
            "create_cases": "on",
            "xml": [
                SimpleUploadedFile("good.xml", voc("good.jpg", [("nv", 5, 5, 50, 40, 0, 0)], size=(120, 80))),
                SimpleUploadedFile("bad.xml", voc("bad.jpg", [("marlboro", 5, 5, 50, 40, 0, 0)], size=(120, 80))),
            ],
            "images": [
                SimpleUploadedFile("good.jpg", image_bytes(size=(120, 80), color=(10, 20, 30))),
                SimpleUploadedFile("bad.jpg", image_bytes(size=(120, 80), color=(200, 20, 30))),
            ],
        },
    )
    assert resp.status_code == 200
    page = resp.content.decode()
    assert "1 box(es) on 1 photo(s), 1 case(s) created" in page
    assert "nothing was stored for bad.jpg" in page
    assert list(Photo.objects.values_list("original_name", flat=True)) == ["good.jpg"]
    assert Case.objects.count() == 1
    assert media_files() == files_before + 1  # the refused file's photo was removed from storage too


def test_coco_image_whose_annotations_all_fail_is_not_stored(admin):
    p1, p2 = photo_named("one.jpg", color=(1, 2, 3)), photo_named("two.jpg", color=(3, 2, 1))
    p3 = photo_named("three.jpg", color=(9, 9, 9))
    doc = {
        "images": [
            {"id": 1, "file_name": "one.jpg"},
            {"id": 2, "file_name": "two.jpg"},
            {"id": 3, "file_name": "three.jpg"},
        ],
        "categories": [{"id": 1, "name": "nv"}, {"id": 2, "name": "marlboro"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},  # unknown label
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": "nope"},  # bad bbox
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [500, 0, 10, 10]},  # wholly outside
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 10, 10]},
        ],
    }
    rep = coco_import(data=json.dumps(doc).encode(), source="c.json", user=admin)
    assert (rep.photos, rep.boxes) == (1, 1)
    assert not PhotoAnnotation.objects.filter(photo__in=[p1, p2]).exists()
    assert PhotoAnnotation.objects.get(photo=p3).boxes.count() == 1
    messages = [e["message"] for e in rep.errors]
    assert "none of the 2 annotation(s) of image 'one.jpg' could be imported, so nothing was stored for it." in messages
    assert "none of the 1 annotation(s) of image 'two.jpg' could be imported, so nothing was stored for it." in messages


def test_coco_image_without_annotations_says_no_lesion(admin):
    photo = photo_named("one.jpg")
    doc = {"images": [{"id": 1, "file_name": "one.jpg"}], "categories": [{"id": 1, "name": "nv"}], "annotations": []}
    rep = coco_import(data=json.dumps(doc).encode(), source="c.json", user=admin)
    assert (rep.photos, rep.boxes, rep.errors) == (1, 0, [])
    assert PhotoAnnotation.objects.filter(photo=photo).exists()


def test_boxes_past_the_edge_are_clipped_and_counted(admin):
    photo = photo_named("a.jpg", size=(224, 224))
    rep = voc_import(
        files=[
            (
                "a.xml",
                voc(
                    "a.jpg",
                    [
                        ("nv", 100, 20, 225, 60, 0, 0),  # 1 px past the right edge
                        ("mel", -3, -1, 40, 40, 0, 0),  # past the top-left corner
                        ("bcc", 10, 10, 50, 50, 0, 0),  # inside
                        ("nv", 224, 0, 300, 10, 0, 0),
                    ],  # wholly outside (touches the edge)
                    size=(224, 224),
                ),
            )
        ],
        user=admin,
    )
    assert (rep.photos, rep.boxes, rep.clipped) == (1, 3, 2)
    assert "3 box(es) on 1 photo(s), 2 box(es) clipped to the photo's edges" in rep.summary()
    assert [e["message"] for e in rep.errors] == [
        "object 'nv': box (224,0)-(300,10) lies wholly outside the photo (224×224 pixels)."
    ]
    stored = sorted(Box.objects.filter(annotation__photo=photo).values_list("x0", "y0", "x1", "y1"))
    assert stored == [(0, 0, 40, 40), (10, 10, 50, 50), (100, 20, 224, 60)]


def test_coco_boxes_past_the_edge_are_clipped(admin):
    photo = photo_named("a.jpg", size=(224, 224))
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 224, "height": 224}],
        "categories": [{"id": 1, "name": "nv"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [200, 210, 25, 20]}],
    }
    rep = coco_import(data=json.dumps(doc).encode(), source="c.json", user=admin)
    assert (rep.boxes, rep.clipped, rep.errors) == (1, 1, [])
    assert Box.objects.filter(annotation__photo=photo).values_list("x0", "y0", "x1", "y1").get() == (200, 210, 224, 224)
