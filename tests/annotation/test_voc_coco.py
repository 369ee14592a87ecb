"""labelImg / Pascal VOC and COCO import and export: round trips lose nothing, problems
are reported per file and line while the rest is imported."""

import csv
import io
import json
import zipfile

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.interchange.coco import coco_import
from annotation.interchange.export import annotations_for_export, export_coco, export_csv, export_voc
from annotation.interchange.voc import voc_import, voc_import_folder
from annotation.models import AnnotationStatus, Box, Case, PhotoAnnotation
from derm_portal import roles
from tests.factories import CaseFactory, image_bytes, make_photo

pytestmark = pytest.mark.django_db


def voc(filename, objects, size=(200, 100), extra=""):
    objs = "".join(
        f"""
  <object>
    <name>{name}</name><pose>Unspecified</pose><truncated>{t}</truncated><difficult>{d}</difficult>
    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
  </object>"""
        for name, x0, y0, x1, y1, d, t in objects
    )
    return f"""<annotation>
  <folder>imgs</folder>
  <filename>{filename}</filename>
  <path>C:\\labelImg\\imgs\\{filename}</path>
  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{extra}{objs}
</annotation>""".encode()


def photo_named(name, size=(200, 100), color=(120, 90, 80), case=None):
    p = make_photo(case or CaseFactory(), size=size, color=color)
    p.original_name = name
    p.save(update_fields=["original_name"])
    return p


def state(annotator):
    """Everything an import stores, comparable across imports."""
    out = {}
    for a in PhotoAnnotation.objects.filter(annotator=annotator).order_by("photo_id"):
        out[a.photo_id] = (
            a.status,
            a.excluded,
            a.exclusion_reason,
            sorted(
                (
                    b.x0,
                    b.y0,
                    b.x1,
                    b.y1,
                    b.sub_class.code if b.sub_class_id else None,
                    b.meta_class.code,
                    b.difficult,
                    b.truncated,
                )
                for b in a.boxes.select_related("sub_class", "meta_class")
            ),
        )
    return out


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def test_voc_round_trip_loses_nothing(admin, users):
    p1, _p2 = photo_named("a.jpg", color=(10, 20, 30)), photo_named("b.jpg", color=(200, 20, 30))
    p3 = photo_named("c.jpg", color=(20, 200, 30))
    files = [
        ("a.xml", voc("a.jpg", [("mel", 10, 5, 60, 50, 0, 0), ("melanocytic", 70, 10, 200, 100, 1, 1)])),
        ("b.xml", voc("b.jpg", [("BCC", 0, 0, 20, 20, 0, 0)])),  # case-insensitive code
        ("c.xml", voc("c.jpg", [], extra="\n  <derm_excluded>blur</derm_excluded>")),  # excluded, no box
    ]
    rep = voc_import(files=files, user=admin, status=AnnotationStatus.ACCEPTED)
    assert rep.errors == [] and (rep.files, rep.photos, rep.boxes) == (3, 3, 3)
    first = state(admin)
    assert first[p1.pk][3][1] == (70, 10, 200, 100, None, "melanocytic", True, True)
    assert first[p3.pk][:3] == ("accepted", True, "blur")

    exported = export_voc(annotations_for_export(user=admin))
    assert set(exported) == {"a.xml", "b.xml", "c.xml"}
    PhotoAnnotation.objects.all().delete()
    rep = voc_import(files=list(exported.items()), user=admin, status=AnnotationStatus.ACCEPTED)
    assert rep.errors == [] and state(admin) == first
    # and the export of the re-import is byte-identical
    assert export_voc(annotations_for_export(user=admin)) == exported


def test_coco_round_trip_loses_nothing(admin):
    _p1, _p2 = photo_named("x.png", color=(10, 20, 30)), photo_named("y.png", color=(30, 20, 10))
    voc_import(
        files=[
            ("x.xml", voc("x.png", [("nv", 1, 2, 30, 40, 1, 0), ("keratinocytic", 100, 50, 200, 100, 0, 1)])),
            ("y.xml", voc("y.png", [], extra="<derm_excluded>exudate</derm_excluded>")),
        ],
        user=admin,
        status=AnnotationStatus.ACCEPTED,
    )
    first = state(admin)
    coco = export_coco(annotations_for_export(user=admin))
    ann = next(a for a in coco["annotations"] if a["bbox"] == [1, 2, 29, 38])
    assert ann["area"] == 29 * 38 and ann["attributes"] == {"difficult": True, "truncated": False}
    assert {c["name"]: c["supercategory"] for c in coco["categories"]}["nv"] == "melanocytic"
    PhotoAnnotation.objects.all().delete()
    rep = coco_import(
        data=json.dumps(coco, indent=2).encode(), source="c.json", user=admin, status=AnnotationStatus.ACCEPTED
    )
    assert rep.errors == [] and state(admin) == first
    # cross-format: COCO -> VOC -> import gives the same again
    exported = export_voc(annotations_for_export(user=admin))
    PhotoAnnotation.objects.all().delete()
    voc_import(files=list(exported.items()), user=admin, status=AnnotationStatus.ACCEPTED)
    assert state(admin) == first


def test_voc_errors_are_reported_per_file_and_line_and_the_rest_imported(admin):
    photo_named("ok.jpg", color=(1, 2, 3))
    photo_named("mixed.jpg", color=(100, 2, 3))
    files = [
        ("ok.xml", voc("ok.jpg", [("nv", 1, 1, 10, 10, 0, 0)])),
        ("broken.xml", b"<annotation>\n  <filename>ok.jpg</filename>\n  <object>\n</annotation>"),
        (
            "mixed.xml",
            voc(
                "mixed.jpg",
                [
                    ("nv", 1, 1, 10, 10, 0, 0),
                    ("psoriasis", 1, 1, 10, 10, 0, 0),
                    ("mel", 210, 50, 250, 90, 0, 0),
                    ("bcc", 5, 5, 5, 9, 0, 0),
                ],
            ),
        ),
        ("missing.xml", voc("nowhere.jpg", [("nv", 1, 1, 10, 10, 0, 0)])),
        ("notvoc.xml", b"<coco/>"),
        ("evil.xml", b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "y">]>\n<annotation/>'),
    ]
    rep = voc_import(files=files, user=admin)
    assert (rep.files, rep.photos, rep.boxes) == (6, 2, 2)
    errs = [(e["file"], e["line"]) for e in rep.errors]
    by = {f: [e for e in rep.errors if e["file"] == f] for f, _ in errs}
    assert by["broken.xml"][0]["line"] == 4 and "malformed XML: mismatched tag" in by["broken.xml"][0]["message"]
    # the four <object> elements start on lines 6, 10, 14 and 18 of the generated file
    mixed = sorted((e["line"], e["message"]) for e in by["mixed.xml"])
    assert [line for line, _ in mixed] == [10, 14, 18]
    assert "'psoriasis' is not a sub-class or meta-class" in mixed[0][1]
    assert "lies wholly outside the photo (200×100 pixels)" in mixed[1][1]
    assert "empty box" in mixed[2][1]
    assert "no photo named 'nowhere.jpg'" in by["missing.xml"][0]["message"]
    assert "expected an <annotation> root" in by["notvoc.xml"][0]["message"]
    assert "DOCTYPE" in by["evil.xml"][0]["message"]
    assert Box.objects.count() == 2


def test_coco_errors_with_line_numbers(admin):
    photo_named("x.png", color=(5, 6, 7))
    rep = coco_import(data=b'{"images": [\n  {"id": 1,', source="bad.json", user=admin)
    assert rep.errors[0]["line"] == 2 and "malformed JSON" in rep.errors[0]["message"]
    doc = {
        "images": [
            {"id": 1, "file_name": "x.png", "width": 200, "height": 100},
            {"id": 2, "file_name": "unknown.png", "width": 5, "height": 5},
        ],
        "categories": [{"id": 1, "name": "nv"}, {"id": 2, "name": "wart"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [200, 0, 20, 10]},  # wholly outside
            {"id": 4, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": "nope"},
        ],
    }
    text = json.dumps(doc, indent=1)
    rep = coco_import(data=text.encode(), source="c.json", user=admin)
    lines = text.splitlines()
    assert rep.boxes == 1
    for i in (1, 2, 3, 4):  # each bad annotation is reported at the line where its object starts
        err = next(e for e in rep.errors if e["message"].startswith(f"annotations[{i}]"))
        assert lines[err["line"] - 1].strip() == "{" and f'"id": {i + 1},' in lines[err["line"]]
    assert any("no photo named 'unknown.png'" in e["message"] and e["line"] for e in rep.errors)
    assert any("category 'wart' is not a sub-class" in e["message"] for e in rep.errors)


def test_create_cases_from_a_labelimg_folder(tmp_path, admin):
    folder = tmp_path / "labelimg"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.jpg").write_bytes(image_bytes(size=(120, 80), color=(40 * i, 90, 60)))
        (folder / f"img{i}.xml").write_text(
            voc(f"img{i}.jpg", [("nv", 1, 1, 50 + i, 50, 0, 0)], size=(120, 80)).decode()
        )
    rep = voc_import_folder(folder=folder, user=admin, create_cases=True, patient_prefix="LBL-")
    assert rep.errors == [] and (rep.created_cases, rep.photos, rep.boxes) == (3, 3, 3)
    assert sorted(Case.objects.values_list("patient__code", flat=True)) == ["LBL-img0", "LBL-img1", "LBL-img2"]
    # importing again matches the photos now in the portal: no new cases, boxes replaced
    rep = voc_import_folder(folder=folder, user=admin, create_cases=True, patient_prefix="LBL-")
    assert rep.created_cases == 0 and Box.objects.count() == 3


def test_duplicate_names_get_a_photo_id_suffix_that_imports_back(admin):
    p1, p2 = photo_named("IMG_0001.jpg", color=(1, 1, 1)), photo_named("IMG_0001.jpg", color=(250, 1, 1))
    rep = voc_import(files=[("IMG_0001.xml", voc("IMG_0001.jpg", []))], user=admin)
    assert "2 photos are named 'IMG_0001.jpg'" in rep.errors[0]["message"]
    from annotation import boxes

    boxes.annotation_save(
        photo=p1, user=admin, boxes=[{"x0": 1, "y0": 1, "x1": 9, "y1": 9, "label": "nv"}], submit=True
    )
    boxes.annotation_save(
        photo=p2, user=admin, boxes=[{"x0": 2, "y0": 2, "x1": 9, "y1": 9, "label": "mel"}], submit=True
    )
    exported = export_voc(annotations_for_export(user=admin, statuses=["annotated"]))
    assert set(exported) == {f"IMG_0001-p{p1.pk}.xml", f"IMG_0001-p{p2.pk}.xml"}
    first = state(admin)
    PhotoAnnotation.objects.all().delete()
    rep = voc_import(files=list(exported.items()), user=admin)
    assert rep.errors == [] and state(admin) == first


def test_import_rights(taxonomy, users):
    with pytest.raises(Exception, match="Only admins import boxes as already accepted"):
        voc_import(files=[], user=users[roles.ANNOTATOR], status="accepted")
    with pytest.raises(Exception, match="someone else's name"):
        voc_import(files=[], user=users[roles.ANNOTATOR], annotator=users[roles.DERMATOLOGIST])
    with pytest.raises(Exception, match="may not import"):
        voc_import(files=[], user=users[roles.READER])


def test_accepted_work_is_not_overwritten_by_an_import(admin):
    photo_named("a.jpg")
    voc_import(files=[("a.xml", voc("a.jpg", [("nv", 1, 1, 5, 5, 0, 0)]))], user=admin, status="accepted")
    rep = voc_import(files=[("a.xml", voc("a.jpg", []))], user=admin)
    assert "already accepted; not replaced" in rep.errors[0]["message"] and Box.objects.count() == 1


def test_csv_export_has_one_row_per_box(admin):
    p = photo_named("a.jpg")
    voc_import(
        files=[("a.xml", voc("a.jpg", [("nv", 1, 1, 5, 5, 0, 0), ("melanocytic", 6, 6, 9, 9, 0, 1)]))],
        user=admin,
        status="accepted",
    )
    rows = list(csv.DictReader(io.StringIO(export_csv(annotations_for_export(user=admin)))))
    assert [(r["label"], r["sub_class"], r["meta_class"], r["x1"], r["truncated"]) for r in rows] == [
        ("nv", "nv", "melanocytic", "5", "0"),
        ("melanocytic", "", "melanocytic", "9", "1"),
    ]
    assert rows[0]["photo_id"] == str(p.pk) and rows[0]["case_ref"] == p.case.reference


def test_commands_round_trip(tmp_path, admin, users):
    photo_named("a.jpg")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.xml").write_bytes(
        voc("a.jpg", [("mel", 3, 4, 50, 60, 0, 0), ("nv", 0, 0, 999, 5, 0, 0), ("nv", 300, 0, 999, 5, 0, 0)])
    )
    err, out = io.StringIO(), io.StringIO()
    call_command("import_boxes", str(src), annotator=admin.username, status="accepted", stdout=out, stderr=err)
    assert "a.xml:" in err.getvalue() and "wholly outside the photo" in err.getvalue()
    assert "2 box(es) on 1 photo(s), 1 box(es) clipped to the photo's edges" in out.getvalue()
    first = state(admin)
    call_command(
        "export_boxes", format="coco", out=str(tmp_path / "out.json"), as_user=admin.username, stdout=io.StringIO()
    )
    call_command("export_boxes", format="voc", out=str(tmp_path / "voc"), as_user=admin.username, stdout=io.StringIO())
    call_command(
        "export_boxes", format="csv", out=str(tmp_path / "out.csv"), as_user=admin.username, stdout=io.StringIO()
    )
    assert (tmp_path / "voc" / "a.xml").exists() and "mel" in (tmp_path / "out.csv").read_text()
    PhotoAnnotation.objects.all().delete()
    call_command(
        "import_boxes", str(tmp_path / "out.json"), annotator=admin.username, status="accepted", stdout=io.StringIO()
    )
    assert state(admin) == first


def test_io_page_buttons(client, admin, users):
    photo_named("a.jpg")
    client.force_login(users[roles.ANNOTATOR])
    from django.core.files.uploadedfile import SimpleUploadedFile

    r = client.post(
        reverse("annotation:workspace_io"),
        {
            "action": "import_voc",
            "status": "annotated",
            "xml": [SimpleUploadedFile("a.xml", voc("a.jpg", [("nv", 1, 1, 5, 5, 0, 0), ("zzz", 1, 1, 5, 5, 0, 0)]))],
        },
    )
    html = r.content.decode()
    assert r.status_code == 200 and "1 box(es) on 1 photo(s)" in html and "&#x27;zzz&#x27; is not a sub-class" in html
    assert PhotoAnnotation.objects.get().annotator == users[roles.ANNOTATOR]
    r = client.post(
        reverse("annotation:workspace_io"), {"action": "export", "format": "voc", "export_status": ["annotated"]}
    )
    assert r["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["Annotations/a.xml"]


def test_boxes_are_scaled_when_the_xml_describes_a_resized_copy(admin):
    photo_named("big.jpg", size=(200, 100))
    photo_named("odd.jpg", size=(200, 100), color=(9, 9, 9))
    rep = voc_import(
        files=[
            ("big.xml", voc("big.jpg", [("nv", 20, 10, 220, 110, 0, 0)], size=(400, 200))),  # labelled on a 2x copy
            ("odd.xml", voc("odd.jpg", [("nv", 1, 1, 9, 9, 0, 0)], size=(300, 300))),  # other aspect ratio
        ],
        user=admin,
    )
    assert "boxes scaled from 400×200" in rep.errors[0]["message"]
    assert "does not match the photo" in rep.errors[1]["message"] and rep.errors[1]["file"] == "odd.xml"
    assert list(Box.objects.values_list("x0", "y0", "x1", "y1")) == [(10, 5, 110, 55)]


def test_csv_export_neutralises_formulas_in_file_names(admin):
    photo_named("=HYPERLINK(1).jpg")
    voc_import(files=[("x.xml", voc("=HYPERLINK(1).jpg", [("nv", 1, 1, 5, 5, 0, 0)]))], user=admin, status="accepted")
    row = next(csv.DictReader(io.StringIO(export_csv(annotations_for_export(user=admin)))))
    assert row["filename"] == "'=HYPERLINK(1).jpg"


def test_csv_export_neutralises_formulas_in_taxonomy_codes(admin, taxonomy):
    """Codes come from an admin's taxonomy file: a code written as a formula stays text in the CSV."""
    from annotation.models import SubClass

    SubClass.objects.filter(taxonomy=taxonomy, code="nv").update(code="=1+1")
    photo_named("plain.jpg")
    voc_import(files=[("x.xml", voc("plain.jpg", [("=1+1", 1, 1, 5, 5, 0, 0)]))], user=admin, status="accepted")
    row = next(csv.DictReader(io.StringIO(export_csv(annotations_for_export(user=admin)))))
    assert row["filename"] == "plain.jpg"
    assert all(v == "'=1+1" for k, v in row.items() if k in ("label", "sub_class")), row
    assert not any(v.startswith("=") for v in row.values()), row
