"""Lesion crops: geometry (margin, clamping, minimum size), files through storage linked
to photo/box/case, idempotent re-runs, and the inference.ml data folder export."""

import io
import zipfile

import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image

from annotation import boxes, crops, review
from annotation.crops import crop_geometry
from annotation.models import AnnotationStatus, Crop, PhotoAnnotation
from derm_portal import roles
from tests.factories import CaseFactory, make_photo


def test_crop_geometry_margin_and_clamping():
    assert crop_geometry(x0=10, y0=20, x1=50, y1=40, width=100, height=100, margin=0) == (10, 20, 50, 40)
    # 10 % of 40 x 20 = 4 x 2 px on each side
    assert crop_geometry(x0=10, y0=20, x1=50, y1=40, width=100, height=100, margin=0.1) == (6, 18, 54, 42)
    # clamped at the photo border
    assert crop_geometry(x0=0, y0=90, x1=30, y1=100, width=100, height=100, margin=0.5) == (0, 85, 45, 100)
    assert crop_geometry(x0=0, y0=0, x1=100, y1=100, width=100, height=100, margin=1) == (0, 0, 100, 100)
    with pytest.raises(ValueError):
        crop_geometry(x0=0, y0=0, x1=1, y1=1, width=1, height=1, margin=-0.1)


@pytest.fixture
def accepted(taxonomy, users, make_user):
    """A 200x100 photo, left half red, right half blue; two accepted boxes and a small one."""
    a, r = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    case = CaseFactory(external_id="LES-1")
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))
    out = io.BytesIO()
    img.save(out, "PNG")
    from annotation.services import photo_attach

    photo = photo_attach(case=case, data=out.getvalue(), filename="two.png", run_hooks=False)
    ann = boxes.annotation_save(
        photo=photo,
        user=a,
        submit=True,
        boxes=[
            {"x0": 10, "y0": 10, "x1": 90, "y1": 90, "label": "mel"},
            {"x0": 120, "y0": 20, "x1": 180, "y1": 60, "label": "keratinocytic"},
            {"x0": 150, "y0": 80, "x1": 158, "y1": 100, "label": "nv"},
        ],
    )
    review.review_accept(annotation=ann, by=r)
    return {"photo": photo, "ann": ann, "case": case, "annotator": a, "reviewer": r}


@pytest.mark.django_db
def test_crops_from_accepted_boxes(accepted):
    rep = crops.crops_make(margin=0.1, min_size=10)
    assert (rep.created, rep.too_small, rep.photos) == (2, 1, 1)
    red, blue = Crop.objects.order_by("x0")
    assert (red.x0, red.y0, red.x1, red.y1, red.width, red.height) == (2, 2, 98, 98, 96, 96)
    assert (blue.x0, blue.y0, blue.x1, blue.y1) == (114, 16, 186, 64)
    assert red.photo == accepted["photo"] and red.case == accepted["case"] and red.box.sub_class.code == "mel"
    assert blue.sub_class is None and blue.meta_class.code == "keratinocytic"
    with red.file.open("rb") as fh:
        im = Image.open(fh).convert("RGB")
        assert im.size == (96, 96) and im.getpixel((48, 48))[0] > 200
    with blue.file.open("rb") as fh:
        im = Image.open(fh).convert("RGB")
        assert im.size == (72, 48) and im.getpixel((36, 24))[2] > 200


@pytest.mark.django_db
def test_crops_are_idempotent_and_follow_the_boxes(accepted):
    crops.crops_make(margin=0.0)
    assert Crop.objects.count() == 3
    rep = crops.crops_make(margin=0.0)
    assert (rep.created, rep.updated, rep.unchanged) == (0, 0, 3)
    # a box moves (reviewer reopens, annotator fixes, accepted again) -> its crop is updated, a deleted box's crop removed
    ann = accepted["ann"]
    review.annotation_reopen(annotation=ann, by=_admin())
    b1, b2, b3 = ann.boxes.order_by("id")
    boxes.annotation_save(
        photo=accepted["photo"],
        user=accepted["annotator"],
        submit=True,
        boxes=[
            {"id": b1.pk, "x0": 20, "y0": 10, "x1": 90, "y1": 90, "label": "mel"},
            {"id": b2.pk, "x0": 120, "y0": 20, "x1": 180, "y1": 60, "label": "keratinocytic"},
        ],
    )
    assert crops.crops_make(margin=0.0).as_dict() == {
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "too_small": 0,
        "removed": 3,
        "photos": 0,
    }  # not accepted any more
    review.review_accept(annotation=PhotoAnnotation.objects.get(pk=ann.pk), by=accepted["reviewer"])
    rep = crops.crops_make(margin=0.0)
    assert rep.created == 2 and Crop.objects.get(box=b1).x0 == 20


def _admin():
    from tests.factories import UserFactory

    return UserFactory(role=roles.ADMIN)


@pytest.mark.django_db
def test_excluded_and_unaccepted_photos_give_no_crops(taxonomy, users):
    p = make_photo(CaseFactory(), size=(50, 50))
    boxes.annotation_save(
        photo=p, user=users[roles.ANNOTATOR], boxes=[{"x0": 1, "y0": 1, "x1": 40, "y1": 40, "label": "nv"}], submit=True
    )
    assert crops.crops_make().created == 0
    PhotoAnnotation.objects.update(status=AnnotationStatus.ACCEPTED, excluded=True, exclusion_reason="blur")
    assert crops.crops_make().created == 0


@pytest.mark.django_db
def test_export_is_an_inference_ml_data_folder_grouped_by_case(accepted, tmp_path):
    from inference.ml.data import read_dataset

    call_command("make_crops", margin=0.1, min_size=10, export=str(tmp_path / "ds"), stdout=io.StringIO())
    records, info = read_dataset(tmp_path / "ds")
    assert info["format"] == "generic"
    assert [(r.label, r.case_id) for r in records] == [("mel", "LES-1")]  # meta-only crop left out at sub level
    # the case's age (from the birth year and the photo's date), sex and site, for the metadata model
    from inference.ml.metadata import read_fields

    year = accepted["photo"].created_at.year
    assert records[0].meta["age"] == str(year - 1970) and records[0].meta["sex"] == "female"
    assert records[0].meta["modality"] == accepted["photo"].modality  # the same writer as training runs
    assert read_fields(records[0].meta) == {"age": str(min((year - 1970) // 10, 8)), "sex": "female", "site": "back"}
    assert Image.open(records[0].path).size == (96, 96)
    res = crops.crops_export_folder(folder=tmp_path / "meta", level="meta", margin=0.1)
    records, _ = read_dataset(tmp_path / "meta")
    assert sorted(r.label for r in records) == ["keratinocytic", "melanocytic"] and res["crops"] == 2


@pytest.mark.django_db
def test_crops_page_button_and_download(client, accepted, users, django_capture_on_commit_callbacks):
    client.force_login(users[roles.ANNOTATOR])
    assert client.post(reverse("annotation:workspace_crops"), {"action": "make", "margin": "10"}).status_code == 403
    client.force_login(users[roles.DERMATOLOGIST])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:  # the task is enqueued on commit
        r = client.post(reverse("annotation:workspace_crops"), {"action": "make", "margin": "10", "min_size": "10"})
    assert r.status_code == 302 and len(callbacks) == 1
    assert Crop.objects.count() == 2 and set(Crop.objects.values_list("margin", flat=True)) == {0.1}
    page = client.get(reverse("annotation:workspace_crops")).content.decode()
    assert "LES-1" in page
    crop = Crop.objects.first()
    assert client.get(reverse("annotation:crop_file", args=[crop.pk]))["Content-Type"] == "image/jpeg"
    r = client.post(reverse("annotation:workspace_crops"), {"action": "export", "margin": "10", "level": "sub"})
    names = zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))).namelist()
    assert "crops/labels.csv" in names and len([n for n in names if n.startswith("crops/images/")]) == 1
    client.force_login(users[roles.READER])
    assert client.get(reverse("annotation:crop_file", args=[crop.pk])).status_code == 403


def test_make_crops_task_is_registered_for_workers_and_routed_to_long(settings):
    """Workers import CELERY_IMPORTS, so the task exists there too, on the long queue."""
    from derm_portal.celery import app

    assert "annotation.crops" in settings.CELERY_IMPORTS
    app.loader.import_default_modules()
    assert "annotation.tasks.make_crops" in app.tasks
    assert app.amqp.router.route({}, "annotation.tasks.make_crops")["queue"].name == "long"


@pytest.mark.django_db
def test_make_crops_task_twice_is_harmless(accepted):
    first = crops.make_crops_task.delay(margin=0.0, min_size=0).get()
    second = crops.make_crops_task.delay(margin=0.0, min_size=0).get()
    assert first["created"] == 3 and second == {**second, "created": 0, "unchanged": 3}
    assert Crop.objects.count() == 3
