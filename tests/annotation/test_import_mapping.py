"""Label mapping and dry runs on box import: third-party class names (labelImg's `marlboro`,
COCO category id 0) mapped onto the taxonomy from a file (command --map, import form), a dry
run reporting what would be imported and storing nothing, and third-party-style VOC files
(Windows <path>, float coordinates, a wrong <size>, boxes 1 px outside)."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.models import Box, Case, Photo
from tests.annotation.test_voc_coco import photo_named, voc
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(users, taxonomy):
    from derm_portal import roles

    return users[roles.ADMIN]


MAP = "# labelImg's sample classes\nmarlboro = nv\ndog, melanocytic\n#0 = mel\n"


def _run(*args):
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command("import_boxes", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_unknown_labels_are_mapped_from_a_file_and_a_dry_run_stores_nothing(tmp_path, admin):
    photo = photo_named("sample.jpg", size=(200, 100))
    (tmp_path / "map.txt").write_text(MAP)
    xml = tmp_path / "sample.xml"
    xml.write_bytes(
        voc(
            "sample.jpg",
            [("marlboro", 10, 10, 50, 40, 0, 0), ("dog", 60, 10, 90, 40, 0, 0), ("person", 100, 10, 120, 40, 0, 0)],
        )
    )
    # without a mapping every unknown class is refused
    out, err = _run(str(xml), "--annotator", admin.username)
    assert "'marlboro' is not a sub-class or meta-class" in err and "0 box(es)" in out
    # dry run with the mapping: says what would be imported, stores nothing
    out, err = _run(str(xml), "--annotator", admin.username, "--map", str(tmp_path / "map.txt"), "--dry-run")
    assert out.startswith("Dry run, nothing stored. Would import: 1 file(s): 2 box(es) on 1 photo(s)")
    assert "'person' is not a sub-class" in err
    assert not Box.objects.exists()
    out, _ = _run(str(xml), "--annotator", admin.username, "--map", str(tmp_path / "map.txt"))
    got = sorted(
        (b.x0, b.sub_class.code if b.sub_class_id else None, b.meta_class.code) for b in Box.objects.filter(photo=photo)
    )
    assert got == [(10, "nv", "melanocytic"), (60, None, "melanocytic")]


def test_a_bad_mapping_file_is_refused_naming_file_and_line(tmp_path, admin):
    photo_named("sample.jpg")
    (tmp_path / "map.txt").write_text("marlboro = nv\ncigarette = lung\nno separator here\n")
    xml = tmp_path / "sample.xml"
    xml.write_bytes(voc("sample.jpg", [("marlboro", 10, 10, 50, 40, 0, 0)]))
    with pytest.raises(CommandError) as exc:
        _run(str(xml), "--annotator", admin.username, "--map", str(tmp_path / "map.txt"))
    assert "map.txt:2: 'cigarette' maps to 'lung', which is not" in str(exc.value)
    assert "map.txt:3: expected 'name = code'" in str(exc.value)
    assert not Box.objects.exists()


def test_coco_category_id_0_is_mapped(tmp_path, admin):
    photo = photo_named("img.jpg", size=(200, 100))
    doc = {
        "images": [{"id": 1, "file_name": "img.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "__ignore__"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10.5, 10.25, 30, 20]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 10, 30, 20]},
        ],
    }
    path = tmp_path / "labelme_coco.json"
    path.write_text(json.dumps(doc, indent=1))
    (tmp_path / "map.json").write_text(json.dumps({"#0": "mel", "__ignore__": "bkl"}))
    out, err = _run(str(path), "--annotator", admin.username, "--map", str(tmp_path / "map.json"))
    assert "2 box(es) on 1 photo(s)" in out, err
    assert sorted(b.sub_class.code for b in Box.objects.filter(photo=photo)) == ["bkl", "mel"]


def test_third_party_voc_files_windows_path_floats_wrong_size_one_pixel_outside(tmp_path, admin):
    photo = photo_named("lesion.jpg", size=(200, 100))
    # labelImg on Windows: <path> with backslashes, float coordinates, a box 1 px past the edges
    xml = tmp_path / "lesion.xml"
    xml.write_bytes(voc("lesion.jpg", [("marlboro", "-1", "9.6", "201", "101", 0, 0)]))
    (tmp_path / "map.txt").write_text(MAP)
    out, err = _run(str(xml), "--annotator", admin.username, "--map", str(tmp_path / "map.txt"))
    assert "1 box(es) on 1 photo(s), 1 box(es) clipped" in out, err
    b = Box.objects.get(photo=photo)
    assert (b.x0, b.y0, b.x1, b.y1) == (0, 9.6, 200, 100)  # clipped to the photo, the float kept
    # a wrong <size> with another aspect ratio: the file is skipped, named
    other = photo_named("other.jpg", size=(200, 100), color=(1, 2, 3))
    bad = tmp_path / "other.xml"
    bad.write_bytes(voc("other.jpg", [("nv", 10, 10, 50, 40, 0, 0)], size=(300, 300)))
    out, err = _run(str(bad), "--annotator", admin.username)
    assert "other.xml" in err and "does not match the photo (200×100)" in err
    assert not Box.objects.filter(photo=other).exists()


def test_import_form_takes_a_mapping_and_a_dry_run(client, admin, tmp_path):
    photo_named("sample.jpg", size=(200, 100))
    client.force_login(admin)
    from django.core.files.uploadedfile import SimpleUploadedFile

    xml = voc("new.jpg", [("marlboro", 10, 10, 50, 40, 0, 0)])

    def post(dry):
        return client.post(
            reverse("annotation:workspace_io"),
            {
                "action": "import_voc",
                "status": "annotated",
                "create_cases": "on",
                **({"dry_run": "on"} if dry else {}),
                "xml": SimpleUploadedFile("new.xml", xml),
                "images": SimpleUploadedFile("new.jpg", image_bytes(size=(200, 100))),
                "map": SimpleUploadedFile("map.txt", MAP.encode()),
            },
        )

    cases, photos = Case.objects.count(), Photo.objects.count()
    r = post(True)
    assert (
        "Dry run, nothing stored. Would import: 1 file(s): 1 box(es) on 1 photo(s), 1 case(s) created"
        in r.content.decode()
    )
    assert (Case.objects.count(), Photo.objects.count(), Box.objects.count()) == (cases, photos, 0)
    r = post(False)
    assert "1 box(es) on 1 photo(s), 1 case(s) created" in r.content.decode()
    assert Box.objects.get().sub_class.code == "nv"
