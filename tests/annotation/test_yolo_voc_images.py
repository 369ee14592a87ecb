"""YOLO export and import, the VOC zip with images that labelImg opens as is, and the round
trip VOC -> portal -> YOLO -> portal keeping every box."""

import io
import zipfile

import pytest
from django.core.management import CommandError, call_command

from annotation.interchange.export import annotations_for_export, export_voc_zip
from annotation.interchange.voc import voc_import
from annotation.interchange.yolo import (
    export_yolo_zip,
    yolo_files_from_zip,
    yolo_import,
)
from annotation.models import AnnotationStatus, Box
from derm_portal import roles
from tests.annotation.test_voc_coco import photo_named, voc
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def _boxes(annotator):
    return sorted(
        (b.photo.original_name, b.x0, b.y0, b.x1, b.y1, b.label_code)
        for b in Box.objects.filter(annotator=annotator).select_related("photo", "sub_class", "meta_class")
    )


def test_round_trip_voc_portal_yolo_portal_keeps_every_box(admin, make_user, tmp_path):
    files, images = [], {}
    objects = {
        "a.jpg": [("nv", 0, 0, 37, 21, 0, 0), ("mel", 101, 3, 333, 299, 0, 0), ("melanocytic", 5, 250, 17, 300, 0, 0)],
        "b.png": [("bkl", 1, 1, 2, 2, 0, 0), ("bcc", 410, 190, 639, 479, 0, 0)],
    }
    sizes = {"a.jpg": (333, 300), "b.png": (640, 480)}
    for name, objs in objects.items():
        files.append((name.rsplit(".", 1)[0] + ".xml", voc(name, objs, size=sizes[name])))
        images[name] = image_bytes("PNG" if name.endswith("png") else "JPEG", size=sizes[name])
    report = voc_import(files=files, user=admin, images=images, create_cases=True, status=AnnotationStatus.ACCEPTED)
    assert report.boxes == 5 and report.created_cases == 2, report.errors
    first = _boxes(admin)

    data = export_yolo_zip(annotations_for_export(user=admin))
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert {"classes.txt", "data.yaml", "labels/a.txt", "labels/b.txt"} <= set(zf.namelist())
    other = make_user(roles.ANNOTATOR)
    classes, label_files = yolo_files_from_zip(data, "yolo.zip")
    report = yolo_import(files=label_files, classes=classes, user=admin, annotator=other)
    assert report.boxes == 5 and not report.errors, report.errors
    assert [b[1:] for b in _boxes(other)] == [b[1:] for b in first]
    assert _boxes(other) == first

    # the command takes the zip too (format from the suffix)
    (tmp_path / "yolo.zip").write_bytes(data)
    third = make_user(roles.ANNOTATOR)
    call_command(
        "import_boxes",
        str(tmp_path / "yolo.zip"),
        "--annotator",
        third.username,
        "--as-user",
        admin.username,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert _boxes(third) == first


def test_voc_zip_with_images_holds_each_photo_next_to_its_xml(admin, tmp_path):
    photo = photo_named("lesion.jpg", size=(200, 100))
    voc_import(
        files=[("lesion.xml", voc("lesion.jpg", [("nv", 10, 10, 50, 40, 0, 0)]))],
        user=admin,
        status=AnnotationStatus.ACCEPTED,
    )
    zf = zipfile.ZipFile(io.BytesIO(export_voc_zip(annotations_for_export(user=admin), with_images=True)))
    assert sorted(zf.namelist()) == ["images/lesion.jpg", "images/lesion.xml"]
    with photo.file.open("rb") as fh:
        assert zf.read("images/lesion.jpg") == fh.read()
    assert b"<filename>lesion.jpg</filename>" in zf.read("images/lesion.xml")
    out = tmp_path / "labelimg.zip"
    call_command(
        "export_boxes",
        "--format",
        "voc",
        "--with-images",
        "--out",
        str(out),
        "--as-user",
        admin.username,
        stdout=io.StringIO(),
    )
    assert sorted(zipfile.ZipFile(out).namelist()) == ["images/lesion.jpg", "images/lesion.xml"]


def test_yolo_import_reports_bad_lines_and_maps_unnamed_class_ids(admin, tmp_path):
    photo = photo_named("img.jpg", size=(200, 100))
    folder = tmp_path / "yolo"
    (folder / "labels").mkdir(parents=True)
    (folder / "labels" / "img.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.1 0.1 0.1 0.1\nnot a line\n")
    (tmp_path / "map.txt").write_text("#0 = nv\n")
    err = io.StringIO()
    call_command(
        "import_boxes",
        str(folder),
        "--format",
        "yolo",
        "--annotator",
        admin.username,
        "--map",
        str(tmp_path / "map.txt"),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert "labels/img.txt:3: expected 'class cx cy width height'" in err.getvalue()
    assert "labels/img.txt:2" in err.getvalue() and "'#7' is not a sub-class" in err.getvalue()
    b = Box.objects.get(photo=photo)
    assert (b.x0, b.y0, b.x1, b.y1, b.label_code) == (80, 40, 120, 60, "nv")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(CommandError, match="bad.zip: not a zip file"):
        call_command("import_boxes", str(tmp_path / "bad.zip"), "--annotator", admin.username, stdout=io.StringIO())


def test_export_form_offers_yolo_and_voc_with_images(client, admin):
    from django.urls import reverse

    photo_named("lesion.jpg", size=(200, 100))
    voc_import(
        files=[("lesion.xml", voc("lesion.jpg", [("nv", 10, 10, 50, 40, 0, 0)]))],
        user=admin,
        status=AnnotationStatus.ACCEPTED,
    )
    client.force_login(admin)
    url = reverse("annotation:workspace_io")
    r = client.post(url, {"action": "export", "format": "yolo", "export_status": "accepted", "with_images": "on"})
    assert {"labels/lesion.txt", "images/lesion.jpg"} <= set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
    r = client.post(url, {"action": "export", "format": "voc", "export_status": "accepted", "with_images": "on"})
    assert sorted(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == ["images/lesion.jpg", "images/lesion.xml"]


def test_coco_import_creates_cases_like_voc_and_none_for_an_image_without_usable_boxes(admin, tmp_path):
    import json

    from annotation.models import Case, Photo

    doc = {
        "images": [
            {"id": 1, "file_name": "C:\\\\data\\\\new.jpg", "width": 120, "height": 90},
            {"id": 2, "file_name": "empty.jpg", "width": 120, "height": 90},
            {"id": 3, "file_name": "missing.jpg", "width": 120, "height": 90},
        ],
        "categories": [{"id": 1, "name": "nv"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [500, 500, 10, 10]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 10, 10]},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    (tmp_path / "img").mkdir()
    for name in ("new.jpg", "empty.jpg"):
        (tmp_path / "img" / name).write_bytes(image_bytes(size=(120, 90), color=(len(name) * 9, 40, 40)))
    cases = Case.objects.count()
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_boxes",
        str(tmp_path / "coco.json"),
        "--annotator",
        admin.username,
        "--create-cases",
        stdout=out,
        stderr=err,
    )
    assert "1 box(es) on 1 photo(s), 1 case(s) created" in out.getvalue(), err.getvalue()
    assert "no photo named 'missing.jpg'" in err.getvalue() and "No image file of that name" in err.getvalue()
    assert "wholly outside" in err.getvalue()
    assert Case.objects.count() == cases + 1
    photo = Photo.objects.get(original_name="new.jpg")
    assert [(b.x0, b.y0, b.x1, b.y1) for b in Box.objects.filter(photo=photo)] == [(10, 10, 40, 30)]
    assert not Photo.objects.filter(original_name="empty.jpg").exists()
