"""Sub-pixel box coordinates: COCO, YOLO and VOC files keep their float values through import
and export, the editor API reads and writes them, crops round outward to whole pixels and
agreement measures the exact boxes. Values that are not finite numbers are refused."""

import io
import json
import zipfile

import pytest
from django.urls import reverse

from annotation import agreement, boxes, crops, review
from annotation.box_validation import box_validate, label_index
from annotation.crops import crop_geometry
from annotation.interchange.coco import coco_import
from annotation.interchange.export import annotations_for_export, export_coco, export_csv, export_voc
from annotation.interchange.voc import voc_import
from annotation.interchange.yolo import export_yolo_zip, yolo_files_from_zip, yolo_import
from annotation.models import AnnotationStatus, Box, BoxOrigin, Crop
from derm_portal import roles
from tests.annotation.test_voc_coco import photo_named, voc

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def coco_doc(bboxes, size=(200, 100)):
    return {
        "images": [{"id": 1, "file_name": "lesion.jpg", "width": size[0], "height": size[1]}],
        "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(bboxes, 1)],
        "categories": [{"id": 1, "name": "nv"}],
    }


def test_coco_float_bbox_imports_and_exports_back_exactly(admin):
    photo = photo_named("lesion.jpg")
    bboxes = [[10.25, 20.5, 30.75, 40.125], [100.1, 0.3, 50.7, 20.9], [5, 6, 7, 8]]
    report = coco_import(data=json.dumps(coco_doc(bboxes)).encode(), source="c.json", user=admin)
    assert report.boxes == 3 and not report.errors, report.errors
    first = Box.objects.filter(photo=photo).order_by("id").first()
    assert (first.x0, first.y0, first.x1, first.y1) == (10.25, 20.5, 41.0, 60.625)  # no rounding half-to-even

    out = export_coco(annotations_for_export(user=admin, statuses=[AnnotationStatus.ANNOTATED]))
    assert [a["bbox"] for a in out["annotations"]] == bboxes
    # the file's own decimals, not 50.699999999999996; whole pixels stay integers as before
    text = json.dumps(out)
    assert "[100.1, 0.3, 50.7, 20.9]" in text and "[5, 6, 7, 8]" in text


def test_yolo_round_trip_keeps_coordinates_to_1e6_of_the_photo(admin, make_user):
    photo = photo_named("mole.jpg", size=(333, 250))
    line = [0.3141592653, 0.2718281828, 0.1234567891, 0.0987654321]
    files = {"labels/mole.txt": ("0 " + " ".join(map(str, line)) + "\n").encode()}
    report = yolo_import(files=files, classes=["nv"], user=admin)
    assert report.boxes == 1 and not report.errors, report.errors
    b = Box.objects.get(photo=photo)
    assert b.x0 != round(b.x0)  # sub-pixel kept (it was rounded to a whole pixel)

    data = export_yolo_zip(annotations_for_export(user=admin, statuses=[AnnotationStatus.ANNOTATED]))
    exported = zipfile.ZipFile(io.BytesIO(data)).read("labels/mole.txt").decode().split()
    cls = zipfile.ZipFile(io.BytesIO(data)).read("classes.txt").decode().split()
    assert cls[int(exported[0])] == "nv"
    assert all(abs(float(v) - want) < 1e-6 for v, want in zip(exported[1:], line, strict=True)), exported

    other = make_user(roles.ANNOTATOR)
    classes, label_files = yolo_files_from_zip(data, "yolo.zip")
    yolo_import(files=label_files, classes=classes, user=admin, annotator=other)
    again = Box.objects.get(photo=photo, annotator=other)
    assert (again.x0, again.y0, again.x1, again.y1) == (b.x0, b.y0, b.x1, b.y1)  # exact after a second trip


def test_voc_float_coordinates_are_kept_and_written_back(admin):
    photo = photo_named("lesion.jpg")
    files = [
        (
            "lesion.xml",
            voc("lesion.jpg", [("nv", "10.5", "20.25", "100.75", "80.125", 0, 0), ("mel", 1, 2, 3, 4, 0, 0)]),
        )
    ]
    report = voc_import(files=files, user=admin)
    assert report.boxes == 2 and not report.errors, report.errors
    stored = sorted((b.x0, b.y0, b.x1, b.y1) for b in Box.objects.filter(photo=photo))
    assert stored == [(1, 2, 3, 4), (10.5, 20.25, 100.75, 80.125)]

    anns = annotations_for_export(user=admin, statuses=[AnnotationStatus.ANNOTATED])
    xml = export_voc(anns)["lesion.xml"].decode()
    assert "<xmin>10.5</xmin>" in xml and "<ymax>80.125</ymax>" in xml
    assert "<xmin>1</xmin>" in xml and "<ymax>4</ymax>" in xml  # VOC's whole pixels stay integers
    assert ",10.5,20.25,100.75,80.125," in export_csv(anns)


def test_editor_api_reads_and_writes_sub_pixel_values_and_a_copy_stays_prefilled(client, admin, make_user):
    photo = photo_named("lesion.jpg")
    coco_import(data=json.dumps(coco_doc([[10.25, 20.5, 30.75, 40.125]])).encode(), source="c.json", user=admin)
    source = Box.objects.get(photo=photo)
    annotator = make_user(roles.ANNOTATOR)
    client.force_login(annotator)
    prefill = client.get(reverse("workspace-detail", args=[photo.pk])).json()["prefill"]["boxes"][0]
    sent = {k: prefill[k] for k in ("x0", "y0", "x1", "y1")}
    assert sent == {"x0": 10.25, "y0": 20.5, "x1": 41, "y1": 60.625} and prefill["source_box"] == source.pk
    # the editor sends an untouched pre-filled box back as it received it
    r = client.put(
        reverse("workspace-boxes", args=[photo.pk]),
        {"boxes": [{**sent, "label": "nv", "source_box": source.pk}]},
        content_type="application/json",
    )
    assert r.status_code == 200, r.content
    box = r.json()["annotation"]["boxes"][0]
    assert (box["x0"], box["y1"], box["origin"]) == (10.25, 60.625, BoxOrigin.PREFILLED)
    # a box moved by whole pixels keeps its sub-pixel size and becomes the annotator's own
    moved = {"x0": 11.25, "y0": 20.5, "x1": 42, "y1": 60.625, "label": "nv", "id": box["id"]}
    box = client.put(
        reverse("workspace-boxes", args=[photo.pk]), {"boxes": [moved]}, content_type="application/json"
    ).json()["annotation"]["boxes"][0]
    assert (box["x0"], box["x1"], box["origin"]) == (11.25, 42, BoxOrigin.DRAWN)


@pytest.mark.parametrize("bad", ["nan", "inf", float("nan"), float("-inf"), 10**400])
def test_coordinates_that_are_not_finite_numbers_are_refused(taxonomy, bad):
    raw = {"x0": bad, "y0": 0, "x1": 10, "y1": 10, "label": "nv"}
    box, errors = box_validate(raw, index=0, width=100, height=100, labels=label_index(), clip=True)
    assert box is None and "x0 is missing or not a number" in errors[0]["message"]


def test_crops_round_sub_pixel_boxes_outward(admin, make_user):
    assert crop_geometry(x0=10.25, y0=20.5, x1=40.75, y1=60.125, width=100, height=100) == (10, 20, 41, 61)
    assert crop_geometry(x0=10.25, y0=20, x1=40.75, y1=60, width=100, height=100, margin=0.1) == (7, 16, 44, 64)
    assert crop_geometry(x0=0.5, y0=0.5, x1=99.5, y1=99.9, width=100, height=100, margin=0.1) == (0, 0, 100, 100)

    photo = photo_named("lesion.jpg")
    ann = boxes.annotation_save(
        photo=photo,
        user=admin,
        submit=True,
        boxes=[{"x0": 10.25, "y0": 20.5, "x1": 40.75, "y1": 60.125, "label": "nv"}],
    )
    review.review_accept(annotation=ann, by=make_user(roles.ANNOTATOR))
    assert crops.crops_make().created == 1
    crop = Crop.objects.get()
    assert (crop.x0, crop.y0, crop.x1, crop.y1, crop.width, crop.height) == (10, 20, 41, 61, 31, 41)
    assert crops.crops_make().unchanged == 1  # the same whole-pixel rectangle: not cut again


def test_agreement_measures_the_exact_boxes(taxonomy, make_user):
    photo = photo_named("lesion.jpg")
    for box in ({"x0": 10.25, "y0": 10, "x1": 20.75, "y1": 20}, {"x0": 10, "y0": 10, "x1": 20, "y1": 20}):
        boxes.annotation_save(photo=photo, user=make_user(roles.ANNOTATOR), submit=True, boxes=[{**box, "label": "nv"}])
    (row,) = agreement.agreement_report()["per_photo"]
    # inter 9.75 x 10, union 105 + 100 - 97.5: 0.9070 (whole pixels would give 100 / 110 = 0.9091)
    assert row["mean_iou"] == pytest.approx(97.5 / 107.5)
