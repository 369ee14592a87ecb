"""Prediction on upload: hook, task idempotency, crash redelivery, warning rule, box mass."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from annotation import services as annotation_services
from annotation.models import DiagnosisLabel
from inference import selectors, services, tasks
from inference.models import GradCamOverlay, Prediction, PredictionStatus
from inference.services import predictions
from tests.annotation.factories import BoxFactory, PhotoAnnotationFactory
from tests.factories import image_bytes, make_photo

pytestmark = pytest.mark.django_db


def upload(case, user, color=(120, 70, 40), size=(80, 60)):
    return annotation_services.photo_attach(
        case=case, data=image_bytes("JPEG", size, color), filename="x.jpg", uploaded_by=user
    )


def test_upload_hook_computes_prediction_after_commit(active_model, case, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        photo = upload(case, users["dermatologist"])
    assert callbacks, "the hook runs on commit"
    pred = Prediction.objects.get(photo=photo)
    assert pred.status == PredictionStatus.DONE and pred.model_version == active_model
    assert len(pred.ranked) == 7 and pred.ranked[0]["probability"] >= pred.ranked[1]["probability"]
    assert set(pred.ranked[0]) == {"sub_class", "meta_class", "probability", "fine_probability"}
    assert abs(sum(r["probability"] for r in pred.ranked) - 1) < 1e-5
    assert set(pred.meta_probabilities) == {"melanocytic", "keratinocytic", "dermal_vascular"}
    assert pred.malignancy_grade in (1, 2, 3) and 1 <= pred.malignancy_score <= 3
    kinds = sorted((o.target_kind, o.rank) for o in pred.overlays.all())
    assert kinds == [("meta", 0), ("sub", 0), ("sub", 1), ("sub", 2)]
    assert [o.target for o in pred.overlays.filter(target_kind="sub").order_by("rank")] == [
        r["sub_class"] for r in pred.ranked[:3]
    ]
    ov = pred.overlays.first()
    assert len({o.scale_max for o in pred.overlays.all()}) == 1  # one colour scale per photo
    with ov.image.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_active_model_no_prediction(taxonomy, case, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        photo = upload(case, users["dermatologist"])
    assert not Prediction.objects.filter(photo=photo).exists()


def test_task_twice_gives_one_result_and_no_duplicate_overlays(active_model, case):
    photo = make_photo(case)
    pred = services.prediction_request(photo=photo, enqueue=False)
    assert tasks.run_prediction.apply(args=[pred.pk]).get() == "done"
    pred.refresh_from_db()
    first = (pred.ranked, pred.finished_at, sorted(GradCamOverlay.objects.values_list("image", flat=True)))
    assert tasks.run_prediction.apply(args=[pred.pk]).get() == "skipped-done"
    pred.refresh_from_db()
    assert (pred.ranked, pred.finished_at, sorted(GradCamOverlay.objects.values_list("image", flat=True))) == first
    assert Prediction.objects.count() == 1 and GradCamOverlay.objects.count() == 4
    # asking again for the same photo does not create another prediction
    assert services.prediction_request(photo=photo) == pred and Prediction.objects.count() == 1


def test_forced_recompute_replaces_overlays(active_model, case, django_capture_on_commit_callbacks):
    photo = make_photo(case)
    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_request(photo=photo)
    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_request(photo=photo, force=True)
    pred = Prediction.objects.get()
    assert pred.status == PredictionStatus.DONE and pred.attempts == 2
    assert GradCamOverlay.objects.count() == 4
    names = set(GradCamOverlay.objects.values_list("image", flat=True))
    expected = {f"overlays/{pred.pk}/sub-{r['sub_class']}.png" for r in pred.ranked[:3]}
    expected.add(f"overlays/{pred.pk}/meta-{max(pred.meta_probabilities, key=pred.meta_probabilities.get)}.png")
    assert names == expected  # same file names: the old files were replaced, not left behind


def _left_running(pred, task_id, age):
    Prediction.objects.filter(pk=pred.pk).update(
        status=PredictionStatus.RUNNING, task_id=task_id, started_at=timezone.now() - age, attempts=1
    )


def test_redelivered_message_takes_over_from_dead_worker(active_model, case):
    """A worker claimed the row (status running, its task id) and died; the broker redelivers the
    same message (acks_late) -> same task id -> the new worker takes over and finishes it."""
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    _left_running(pred, "task-1", timedelta(seconds=2))
    assert tasks.run_prediction.apply(args=[pred.pk], task_id="task-1").get() == "done"
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.DONE and pred.attempts == 2 and pred.overlays.count() == 4


def test_duplicate_message_leaves_live_attempt_alone(active_model, case):
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    _left_running(pred, "task-1", timedelta(seconds=2))
    assert tasks.run_prediction.apply(args=[pred.pk], task_id="task-2").get() == "busy"
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.RUNNING and pred.task_id == "task-1" and pred.attempts == 1


def test_stale_running_prediction_is_taken_over(active_model, case):
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    _left_running(pred, "task-1", services.STALE_RUNNING + timedelta(seconds=5))
    assert tasks.run_prediction.apply(args=[pred.pk], task_id="task-3").get() == "done"
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.DONE and pred.task_id == "task-3"


def test_new_request_rescues_a_stale_running_prediction(active_model, case, django_capture_on_commit_callbacks):
    """Redis redelivers an unacked job only after its visibility timeout; meanwhile a new request
    (e.g. the case page's "run on photos without a result") sends a fresh job that takes over."""
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    _left_running(pred, "dead-task", timedelta(seconds=3))
    with django_capture_on_commit_callbacks(execute=True) as jobs:
        services.prediction_request(photo=pred.photo)
    assert not jobs  # still fresh: the live attempt is left alone
    _left_running(pred, "dead-task", services.STALE_RUNNING + timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True) as jobs:
        services.prediction_request(photo=pred.photo)
    assert len(jobs) == 1
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.DONE and pred.attempts == 2


def test_superseded_attempt_does_not_store(active_model, case):
    """If another attempt took the row over while this one computed, this one's result is dropped."""
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    claimed, state = services.prediction_claim(prediction_pk=pred.pk, task_id="slow")
    assert state == "claimed"
    Prediction.objects.filter(pk=pred.pk).update(task_id="newer")
    out = {
        "ranked": [],
        "meta_probabilities": {},
        "fused_method": "product",
        "malignancy_score": None,
        "malignancy_grade": None,
        "margin": None,
        "ood_score": None,
        "looks_unfamiliar": False,
        "overlays": [],
        "cam_error": "",
    }
    assert predictions._prediction_store(prediction_pk=pred.pk, task_id="slow", out=out, started=0) == "superseded"
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.RUNNING and pred.ranked == []


def test_failure_is_recorded_and_retried_on_request(
    active_model, case, monkeypatch, django_capture_on_commit_callbacks
):
    photo = make_photo(case)
    monkeypatch.setattr(predictions, "_open_photo_rgb", lambda photo: (_ for _ in ()).throw(OSError("disk gone")))
    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_request(photo=photo)
    pred = Prediction.objects.get()
    assert pred.status == PredictionStatus.FAILED and "disk gone" in pred.error
    assert tasks.run_prediction.apply(args=[pred.pk]).get() == "failed"  # not retried by a stray message
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        services.prediction_request(photo=photo)
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.DONE and pred.error == ""


@pytest.mark.parametrize(
    "p1,p2,unfamiliar,close,ood",
    [
        (0.50, 0.45, False, True, False),  # 5 points apart: too close
        (0.50, 0.41, False, True, False),  # 9 points
        (0.50, 0.40, False, False, False),  # exactly 10 points: not flagged (rule is "< 10")
        (0.70, 0.10, False, False, False),
        (0.70, 0.10, True, False, True),
        (0.40, 0.35, True, True, True),
    ],
)
def test_warning_rule(p1, p2, unfamiliar, close, ood):
    ranked = [{"sub_class": "mel", "probability": p1}, {"sub_class": "nv", "probability": p2}]
    text = services.prediction_warning(looks_unfamiliar=unfamiliar, ranked=ranked, margin=round(p1 - p2, 10))
    assert ("close" in text) is close
    assert ("looks unlike" in text) is ood
    assert (text == "") is (not close and not ood)


def test_warning_stored_from_model_output(active_model, case, monkeypatch):
    from inference.ml.predict import Predictor

    real = Predictor.predict_one

    def fake(self, img, method="product", metadata=None, **kw):  # kw: modality, thresholds
        d = real(self, img, method, metadata, **kw)
        d.looks_unfamiliar = True
        return d

    monkeypatch.setattr(Predictor, "predict_one", fake)
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    pred.refresh_from_db()
    assert pred.looks_unfamiliar and "looks unlike the photos the model was trained on" in pred.warning


def test_box_mass_reported_when_photo_has_boxes(active_model, case, users, monkeypatch):
    photo = make_photo(case, size=(80, 60))
    monkeypatch.setattr(selectors, "photo_boxes", lambda p: [(10, 0, 70, 60)])  # the whole centre square
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    masses = [o.box_mass for o in Prediction.objects.get().overlays.all()]
    assert all(m is not None and 0.99 <= m <= 1.0 for m in masses if m is not None) and any(
        m is not None for m in masses
    )


def test_box_mass_from_annotator_boxes(active_model, case, users):
    """Wired to annotation.models.Box (x0, y0, x1, y1 in original pixels of the annotated size)."""
    from annotation.models import MetaClass

    photo = make_photo(case, size=(80, 60))
    assert selectors.photo_boxes(photo) == []
    ann = PhotoAnnotationFactory(photo=photo, annotator=users["annotator"])
    meta = MetaClass.objects.filter(taxonomy=active_model.taxonomy).first()
    # drawn on a 2x downscaled copy (40x30): scaled back to photo pixels
    BoxFactory(annotation=ann, x0=5, y0=0, x1=35, y1=30, image_width=40, image_height=30, meta_class=meta)
    assert selectors.photo_boxes(photo) == [(10.0, 0.0, 70.0, 60.0)]
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    overlays = list(Prediction.objects.get().overlays.all())
    # the box covers the whole centre square the model sees: all heat-map mass is inside
    assert all(o.box_mass == pytest.approx(1.0) for o in overlays if o.box_mass is not None)
    assert any(o.box_mass is not None for o in overlays)


def test_recompute_command_and_after_activation(active_model, case, users):
    from django.core.management import call_command

    make_photo(case, color=(10, 10, 10))
    make_photo(case, color=(200, 200, 200))
    call_command("recompute_predictions")
    assert Prediction.objects.filter(status=PredictionStatus.DONE).count() == 2
    done = sorted(Prediction.objects.values_list("pk", "finished_at"))
    # both photos already have a done prediction by this model: each is visited and kept as it is
    counts = services.photos_recompute(model_version=active_model)
    assert counts == {"skipped-done": 2}
    assert sorted(Prediction.objects.values_list("pk", "finished_at")) == done


def test_assessment_never_touches_labels(active_model, case, users):
    from annotation.models import SubClass

    photo = make_photo(case)
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    mel = SubClass.objects.get(taxonomy=active_model.taxonomy, code="mel")
    nv = SubClass.objects.get(taxonomy=active_model.taxonomy, code="nv")
    annotation_services.label_record(case=case, sub_class=nv, source="histopathology", by=users["dermatologist"])
    before = list(DiagnosisLabel.objects.values_list("pk", "sub_class__code", "source", "confirmed"))
    a = services.assessment_record(
        photo=photo, doctor=users["dermatologist"], agrees=False, sub_class=mel, note="looks atypical"
    )
    assert a.prediction.pk == pred.pk and a.sub_class == mel and not a.agrees
    assert list(DiagnosisLabel.objects.values_list("pk", "sub_class__code", "source", "confirmed")) == before
    agree = services.assessment_record(photo=photo, doctor=users["admin"], agrees=True)
    assert agree.sub_class.code == Prediction.objects.get().ranked[0]["sub_class"]
    from django.core.exceptions import PermissionDenied, ValidationError

    with pytest.raises(ValidationError):
        services.assessment_record(photo=photo, doctor=users["dermatologist"], agrees=False)
    with pytest.raises(PermissionDenied):
        services.assessment_record(photo=photo, doctor=users["annotator"], agrees=True)


def test_boxes_drawn_after_the_prediction_are_used_on_read(active_model, case, users, client):
    """Boxes are usually drawn after upload: pages and API compute the share from the stored map."""
    from annotation.models import MetaClass
    from inference.presenters import prediction_view

    photo = make_photo(case, size=(90, 60))
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    pred.refresh_from_db()
    assert prediction_view(pred)["box_mass"] is None
    overlays = list(pred.overlays.order_by("target_kind", "rank"))
    for o in overlays:
        assert len(o.heatmap) == 32 and len(o.heatmap[0]) == 32 and max(map(max, o.heatmap)) <= 1.0
    # a class whose gradients weight every activation negatively has an all-zero Grad-CAM map
    # (the tiny model has some): it has no share to give; take a map with mass
    ov = next(o for o in overlays if np.asarray(o.heatmap).sum() > 0)
    ann = PhotoAnnotationFactory(photo=photo, annotator=users["annotator"])
    meta = MetaClass.objects.filter(taxonomy=active_model.taxonomy).first()
    # left half of the centre square (the model sees x in [15, 75))
    BoxFactory(annotation=ann, x0=15, y0=0, x1=45, y1=60, image_width=90, image_height=60, meta_class=meta)
    hm = np.asarray(ov.heatmap)
    expected = hm[:, :16].sum() / hm.sum()
    view = prediction_view(pred)
    got = {o["id"]: o["box_mass"] for o in view["overlays"]}
    assert got[ov.pk] == pytest.approx(expected, abs=1e-6)
    assert all(got[o.pk] is None for o in overlays if np.asarray(o.heatmap).sum() == 0)
    client.force_login(users["dermatologist"])
    api = client.get(f"/api/predictions/{pred.pk}/").json()
    assert {o["id"]: o["box_mass"] for o in api["overlays"]}[ov.pk] == pytest.approx(expected, abs=1e-6)
    html = client.get(f"/cases/{case.pk}/").content.decode()
    assert "Heat map inside annotator boxes" in html and f"{round(100 * expected)}%" in html


def test_case_metadata_enters_the_prediction_where_the_model_has_a_metadata_model(active_model, case):
    """The model takes the case's age, sex and site; the photo page says so; without a metadata model
    (or a field it knows) the differential comes from the photo alone."""
    import json

    from django.template.loader import render_to_string

    from annotation.selectors import case_metadata
    from inference import loader, presenters
    from inference.ml.metadata import FILE, MetadataModel

    photo = make_photo(case)
    case.body_site, case.age_at_visit = "back", 67
    case.save()
    assert case_metadata(case) == {"age": 67, "sex": "female", "site": "back"}
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t1")
    pred.refresh_from_db()
    assert pred.metadata_used == {}  # the tiny model has no metadata model
    plain = {r["sub_class"]: r["probability"] for r in pred.ranked}

    # give the artefact one: melanoma on the back of the old
    subs = [r["sub_class"] for r in pred.ranked]
    metas = [{"age": 65, "site": "back", "sex": "female"}] * 30 + [{"age": 20, "site": "face", "sex": "male"}] * 30
    y = [subs.index("mel")] * 30 + [subs.index("nv")] * 30
    tax_subs = loader.predictor_for(active_model).taxonomy.sub_classes
    y = [tax_subs.index(subs[i]) for i in y]
    mm = MetadataModel.fit(metas, y, tax_subs, weight=0.5)
    tax = loader.predictor_for(active_model).taxonomy
    mc = MetadataModel.fit(metas, [int(tax.parent_index[i]) for i in y], tax.meta_classes, weight=0.5)
    from pathlib import Path

    d = Path(loader.predictor_for(active_model).model_dir)
    (d / FILE).write_text(json.dumps({"fine": mm.to_dict(), "coarse": mc.to_dict()}))
    active_model.manifest = {**active_model.manifest, "metadata": {"fields": {"age": 2, "sex": 2, "site": 2}}}
    active_model.save()
    loader.cache_clear()
    services.prediction_request(photo=photo, force=True, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t2")
    pred.refresh_from_db()
    assert pred.metadata_used == {"age": "6", "sex": "female", "site": "back"}
    adjusted = {r["sub_class"]: r["probability"] for r in pred.ranked}
    assert adjusted["mel"] > plain["mel"] and adjusted["nv"] < plain["nv"]
    html = render_to_string("inference/_photo_block.html", {"photo": photo, "p": presenters.prediction_view(pred)})
    assert "Adjusted for the patient" in html and "age 60-69" in html and "site: back" in html

    # a case whose fields the model does not know: the photo alone, and the page says so
    case.body_site, case.age_at_visit = "left shin", None
    case.patient.birth_year, case.patient.sex = None, "unknown"
    case.patient.save()
    case.save()
    services.prediction_request(photo=photo, force=True, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t3")
    pred.refresh_from_db()
    assert pred.metadata_used == {}
    assert {r["sub_class"]: r["probability"] for r in pred.ranked} == pytest.approx(plain, abs=1e-6)
    html = render_to_string("inference/_photo_block.html", {"photo": photo, "p": presenters.prediction_view(pred)})
    assert "From the photo alone: no age, sex or body site of this case the model knows" in html
