"""Box imports grow linearly with the file, refuse files over the caps with a clear message,
and a large upload from the web page is imported on the long queue with progress."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.interchange.coco import coco_import
from annotation.interchange.limits import ImportTooLarge
from annotation.interchange.voc import voc_import
from annotation.models import Box, ImportRun, PhotoAnnotation
from derm_portal import roles
from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db


def coco_file(n_images: int, matched: dict[str, int] | None = None) -> bytes:
    """n_images images with one box each; the named ones (name -> image id) match portal photos,
    all others name files the portal does not have (the shape of the quadratic-time attack)."""
    matched = matched or {}
    images = [{"id": i, "file_name": f"missing-{i}.jpg", "width": 200, "height": 100} for i in range(1, n_images + 1)]
    for name, image_id in matched.items():
        images[image_id - 1]["file_name"] = name
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 50, 40]} for i in range(1, n_images + 1)]
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nv"}]}
    return json.dumps(doc, indent=1).encode()


def photo_named(name):
    p = make_photo(CaseFactory(), size=(200, 100))
    p.original_name = name
    p.save(update_fields=["original_name"])
    return p


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def test_coco_file_of_50000_images_imports(admin):
    """Every annotation of an image the portal does not have used to scan all images:
    50,000 x 50,000 comparisons. Now one pass; the report keeps the first problems."""
    photos = [photo_named(f"lesion-{k}.jpg") for k in range(3)]
    data = coco_file(50_000, {p.original_name: 1 + k * 20_000 for k, p in enumerate(photos)})
    report = coco_import(data=data, source="big.json", user=admin)
    assert (report.photos, report.boxes) == (3, 3)
    assert report.n_errors == 50_000 - 3  # one "no photo named" per unmatched image
    assert len(report.errors) == 1000 and report.errors_not_kept == 50_000 - 3 - 1000
    # line numbers of the one-pass scan: the line of images[1]'s "{", two above its file_name
    lines = data.decode().split("\n")
    assert report.errors[0]["line"] == lines.index('   "file_name": "missing-2.jpg",') + 1 - 2
    assert "missing-2.jpg" in report.errors[0]["message"]
    assert "problem(s) (the first 1000 listed)" in report.summary()
    assert Box.objects.filter(annotation__photo__in=photos).count() == 3


def test_unknown_image_id_still_reported(admin):
    doc = {
        "images": [{"id": 1, "file_name": "nope.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": [1], "category_id": [1], "bbox": [0, 0, 1, 1]},
        ],
        "categories": [{"id": 1, "name": "nv"}, {"id": {"x": 1}, "name": "mel"}],
    }
    report = coco_import(data=json.dumps(doc).encode(), source="c.json", user=admin)
    messages = [e["message"] for e in report.errors]
    assert any("categories[1] has no id" in m for m in messages)
    assert any("image_id 7, which is not in images" in m for m in messages)
    assert any("image_id [1], which is not in images" in m for m in messages)
    assert not any("image_id 1," in m for m in messages)  # image 1 exists (unmatched): reported once, as an image


def test_file_over_the_size_cap_is_refused_whole(admin, settings):
    photo = photo_named("a.jpg")
    settings.DERM_BOX_IMPORT_MAX_BYTES = 1000
    data = coco_file(20, {"a.jpg": 1})
    with pytest.raises(ImportTooLarge, match=r"big\.json: .* MB is over the import limit .*DERM_BOX_IMPORT_MAX_BYTES"):
        coco_import(data=data, source="big.json", user=admin)
    assert not PhotoAnnotation.objects.filter(photo=photo).exists()


def test_counts_over_the_caps_are_refused_whole(admin, settings):
    photo = photo_named("a.jpg")
    settings.DERM_BOX_IMPORT_MAX_IMAGES = 10
    with pytest.raises(
        ImportTooLarge, match=r"many\.json: 11 images is over the import limit of 10 \(DERM_BOX_IMPORT_MAX_IMAGES\)"
    ):
        coco_import(data=coco_file(11, {"a.jpg": 1}), source="many.json", user=admin)
    settings.DERM_BOX_IMPORT_MAX_IMAGES = 100
    settings.DERM_BOX_IMPORT_MAX_ANNOTATIONS = 5
    with pytest.raises(ImportTooLarge, match="annotations is over the import limit of 5"):
        coco_import(data=coco_file(6, {"a.jpg": 1}), source="many.json", user=admin)
    settings.DERM_BOX_IMPORT_MAX_IMAGES = 2
    with pytest.raises(ImportTooLarge, match="3 XML files is over the import limit of 2"):
        voc_import(files=[(f"{k}.xml", b"<annotation/>") for k in range(3)], user=admin)
    assert not PhotoAnnotation.objects.filter(photo=photo).exists()


def test_large_upload_runs_on_the_long_queue_with_progress(admin, client, settings, django_capture_on_commit_callbacks):
    """Above DERM_BOX_IMPORT_INLINE_BYTES the page queues the file (eager Celery in tests
    runs it at commit); the run records progress, its report, and drops the stored file."""
    photos = [photo_named(f"lesion-{k}.jpg") for k in range(3)]
    settings.DERM_BOX_IMPORT_INLINE_BYTES = 100
    data = coco_file(300, {p.original_name: 1 + 100 * k for k, p in enumerate(photos)})
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(
            reverse("annotation:workspace_io"),
            {
                "action": "import_coco",
                "status": "annotated",
                "coco": SimpleUploadedFile("big.json", data, "application/json"),
            },
        )
    assert resp.status_code == 302
    run = ImportRun.objects.get(kind="coco")
    assert run.status == ImportRun.Status.DONE and run.started_by == admin
    assert run.summary["boxes"] == 3 and run.summary["photos"] == 3
    assert "297 problem(s)" in run.summary["text"]
    assert not run.upload  # the queued file is removed once imported
    assert run.progress == {"stage": "photos", "done": 3, "total": 3}  # the worker's last progress write
    assert Box.objects.filter(annotation__photo__in=photos, annotation__annotator=admin).count() == 3
    page = client.get(reverse("annotation:workspace_io")).content.decode()
    assert "Queued imports" in page and "big.json" in page and "3 box(es) on 3 photo(s)" in page


def test_large_upload_with_a_mapping_and_a_dry_run_is_queued_with_both(
    admin, client, settings, django_capture_on_commit_callbacks
):
    """A large upload with a label mapping and/or a dry run goes to the long queue too (it was
    imported within the request); the run carries both, and a dry run's result shows on the page."""
    photos = [photo_named(f"lesion-{k}.jpg") for k in range(2)]
    settings.DERM_BOX_IMPORT_INLINE_BYTES = 100
    doc = json.loads(coco_file(50, {p.original_name: 1 + 10 * k for k, p in enumerate(photos)}))
    doc["categories"] = [{"id": 1, "name": "marlboro"}]  # labelImg's sample class: only the mapping knows it
    data = json.dumps(doc).encode()
    client.force_login(admin)

    def post(**extra):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                reverse("annotation:workspace_io"),
                {
                    "action": "import_coco",
                    "status": "annotated",
                    "coco": SimpleUploadedFile("big.json", data, "application/json"),
                    "map": SimpleUploadedFile("map.txt", b"marlboro = mel\n", "text/plain"),
                    **extra,
                },
            )

    resp = post(dry_run="on")
    assert resp.status_code == 302
    trial = ImportRun.objects.get(kind="coco")
    assert trial.options["dry_run"] is True and trial.options["map"] == {"marlboro": "mel"}
    assert trial.status == ImportRun.Status.DONE and trial.summary["dry_run"] is True
    assert trial.summary["boxes"] == 2 and trial.summary["photos"] == 2  # mapped: not skipped as unknown
    assert trial.progress == {"stage": "photos", "done": 2, "total": 2}  # kept although the run was rolled back
    assert not Box.objects.exists() and not PhotoAnnotation.objects.exists()  # a dry run stores nothing
    page = client.get(reverse("annotation:workspace_io")).content.decode()
    assert "(dry run: nothing stored)" in page and "Dry run, nothing stored. Would import: 1 file(s): 2 box(es)" in page
    assert "with a label mapping of 1 name(s)" in page

    resp = post()
    run = ImportRun.objects.filter(kind="coco").latest("id")
    assert run.status == ImportRun.Status.DONE and run.options["dry_run"] is False, run.summary
    assert sorted(b.sub_class.code for b in Box.objects.filter(annotation__photo__in=photos)) == ["mel", "mel"]


def test_a_queued_mapping_to_a_code_gone_from_the_taxonomy_fails_the_run(admin, django_capture_on_commit_callbacks):
    from annotation.interchange import jobs

    photo_named("a.jpg")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = jobs.box_import_enqueue(data=coco_file(2, {"a.jpg": 1}), source="x.json", user=admin)
    ImportRun.objects.filter(pk=run.pk).update(options={**run.options, "map": {"marlboro": "no-such-code"}})
    for callback in callbacks:
        callback()
    run.refresh_from_db()
    assert run.status == ImportRun.Status.FAILED
    assert "'marlboro' maps to 'no-such-code', which is not a sub-class" in run.summary["failure"]
    assert not Box.objects.exists()


def test_a_redelivered_import_task_does_not_run_twice(admin, django_capture_on_commit_callbacks):
    from annotation.interchange import jobs

    photo_named("a.jpg")
    with django_capture_on_commit_callbacks(execute=True):
        run = jobs.box_import_enqueue(data=coco_file(2, {"a.jpg": 1}), source="x.json", user=admin)
    run.refresh_from_db()
    assert run.status == ImportRun.Status.DONE
    assert jobs.box_import_run(run_pk=run.pk) == "skipped"


def test_queued_import_is_routed_to_the_long_queue(settings):
    app = Celery("derm-route-check", set_as_current=False)
    app.conf.task_routes = settings.CELERY_TASK_ROUTES
    app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert app.amqp.router.route({}, "annotation.tasks.import_boxes")["queue"].name == "long"


def test_import_boxes_command_refuses_a_file_over_the_cap(admin, settings, tmp_path):
    from django.core.management import CommandError, call_command

    settings.DERM_BOX_IMPORT_MAX_BYTES = 500
    path = tmp_path / "huge.json"
    path.write_bytes(coco_file(20))
    with pytest.raises(CommandError, match=r"huge\.json: .* over the import limit"):
        call_command("import_boxes", str(path), annotator=admin.username)


def test_large_upload_that_creates_cases_is_queued_with_its_images(
    admin, client, settings, django_capture_on_commit_callbacks
):
    """Creating cases needs the uploaded images: a large file is queued with them (one stored zip)
    instead of being imported within the request; the worker creates one case per new image."""
    from annotation.models import Case, Photo
    from tests.factories import image_bytes

    settings.DERM_BOX_IMPORT_INLINE_BYTES = 100
    doc = json.loads(coco_file(40))
    doc["images"][0]["file_name"] = "C:\\labelme\\new-a.jpg"
    doc["images"][1]["file_name"] = "new-b.jpg"
    cases_before = Case.objects.count()
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        resp = client.post(
            reverse("annotation:workspace_io"),
            {
                "action": "import_coco",
                "status": "annotated",
                "create_cases": "on",
                "coco": SimpleUploadedFile("big.json", json.dumps(doc).encode(), "application/json"),
                "images": [
                    SimpleUploadedFile("new-a.jpg", image_bytes("JPEG", size=(200, 100)), "image/jpeg"),
                    SimpleUploadedFile(
                        "new-b.jpg", image_bytes("JPEG", size=(200, 100), color=(9, 90, 9)), "image/jpeg"
                    ),
                ],
            },
        )
    assert resp.status_code == 302 and len(callbacks) >= 1  # queued, not imported in the request
    run = ImportRun.objects.get(kind="coco")
    assert run.options["create_cases"] is True
    assert run.status == ImportRun.Status.DONE, run.summary
    assert run.summary["photos"] == 2 and run.summary["boxes"] == 2
    assert Case.objects.count() == cases_before + 2
    assert set(Photo.objects.values_list("original_name", flat=True)) >= {"new-a.jpg", "new-b.jpg"}
    assert not run.upload  # the stored zip is removed once imported
