"""Model lifecycle: the activation review and its logged override, retired results labelled as such,
recompute surviving lock errors and dead attempts, and training-time warnings about small classes."""

import json
import shutil
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from derm_portal import roles
from inference import services
from inference.models import ModelActivation, ModelStatus, Prediction, PredictionStatus
from inference.review import activation_concerns
from tests.factories import make_photo

pytestmark = pytest.mark.django_db

PASSING = {
    "heldout": {
        "urgent": {"sensitivity": 0.93, "specificity": 0.80, "target_sensitivity": 0.90, "n_pos": 50, "n_neg": 400},
        "malignant": {"sensitivity": 0.96, "specificity": 0.70, "target_sensitivity": 0.95, "n_pos": 90, "n_neg": 360},
    },
    "targets": {"urgent": 0.90, "malignant": 0.95},
}


def _second(model_copy, name):
    dest = model_copy.parent / name
    shutil.copytree(model_copy, dest)
    return dest


def _good(mv, model_dir, triage=PASSING):
    """Give ``mv`` a passing triage calibration and enough photos of every class."""
    (model_dir / "triage.json").write_text(json.dumps(triage))
    data = mv.manifest["data"]
    mv.manifest = {**mv.manifest, "data": {**data, "class_counts": dict.fromkeys(data["class_counts"], 25)}}
    mv.save(update_fields=["manifest"])
    return mv


def test_concerns_name_small_classes_missing_calibration_and_missed_targets(taxonomy, model_copy):
    mv = services.model_register(model_dir=model_copy)
    (model_copy / "triage.json").unlink(missing_ok=True)
    concerns = activation_concerns(mv)
    assert any("No triage calibration" in c for c in concerns)
    assert any("fewer than 20 photos of" in c and "mel (" in c for c in concerns)
    below = json.loads(json.dumps(PASSING))
    below["heldout"]["urgent"]["sensitivity"] = 0.85
    _good(mv, model_copy, below)
    assert activation_concerns(mv) == [
        "Urgent tier (high-grade malignancy): held-out sensitivity 0.850 is below the target 0.90."
    ]
    _good(mv, model_copy)
    assert activation_concerns(mv) == []


def test_failing_model_needs_a_reason_which_is_logged_and_shown(client, taxonomy, model_copy, users):
    old_dir = _second(model_copy, "old")
    old = _good(services.model_register(model_dir=old_dir, name="old model"), old_dir)
    services.model_activate(model_version=old, by=users["admin"])  # passes every check: no reason needed
    assert ModelActivation.objects.get(model_version=old).concerns == []
    mv = services.model_register(model_dir=model_copy, name="tiny candidate")
    with pytest.raises(services.ActivationReasonRequired) as err:
        services.model_activate(model_version=mv, by=users["admin"])
    assert any("fewer than 20 photos" in c for c in err.value.concerns)

    client.force_login(users[roles.ADMIN])
    url = reverse("inference:model_activate", args=[mv.pk])
    page = client.get(url).content.decode()
    # candidate beside the active model, its concerns, a reason box and a confirmation box
    assert "old model" in page and 'id="activation-concerns"' in page and 'name="reason"' in page
    assert "Urgent tier (high-grade malignancy): sensitivity" in page and "0.930" in page  # the active model's number
    r = client.post(url, {"confirm": "1", "reason": "  "})
    assert r.status_code == 200 and "write why" in r.content.decode()
    r = client.post(url, {"reason": "pilot"})  # not confirmed
    assert r.status_code == 200
    mv.refresh_from_db()
    assert mv.status == ModelStatus.CANDIDATE
    r = client.post(url, {"confirm": "1", "reason": "Pilot on the study site only", "recompute": "1"})
    assert r.status_code == 302
    mv.refresh_from_db()
    old.refresh_from_db()
    assert (mv.status, old.status) == (ModelStatus.ACTIVE, ModelStatus.RETIRED)
    log = ModelActivation.objects.get(model_version=mv)
    assert log.override_reason == "Pilot on the study site only" and log.activated_by == users["admin"]
    assert log.previous == old and any("fewer than 20 photos" in c for c in log.concerns)
    detail = client.get(reverse("inference:model_detail", args=[mv.pk])).content.decode()
    assert "Pilot on the study site only" in detail and 'id="recompute-progress"' in detail


def test_api_activation_asks_for_the_reason(client, taxonomy, model_copy, users):
    mv = services.model_register(model_dir=model_copy)
    client.force_login(users[roles.ADMIN])
    r = client.post(f"/api/models/{mv.pk}/activate/", {}, content_type="application/json")
    assert r.status_code == 400 and "reason" in r.json()
    r = client.post(f"/api/models/{mv.pk}/activate/", {"reason": "demo"}, content_type="application/json")
    assert r.status_code == 200
    assert ModelActivation.objects.get(model_version=mv).override_reason == "demo"


def _done(photo, mv):
    pred = services.prediction_request(photo=photo, model_version=mv, enqueue=False)
    assert services.prediction_execute(prediction_pk=pred.pk, task_id="t") == "done"
    # a photo the tiny model can read (its detector calls every drawn photo unfamiliar): the report needs a tier
    Prediction.objects.filter(pk=pred.pk).update(tier="routine", abstain="", triage_reason="benign-looking")
    return pred


def test_retired_results_are_labelled_on_the_case_page_and_patient_report(client, taxonomy, model_copy, users, case):
    a = services.model_register(model_dir=model_copy, name="model A")
    services.model_activate(model_version=a, by=users["admin"], reason="test")
    photo = make_photo(case, color=(40, 30, 20))
    _done(photo, a)
    b = services.model_register(model_dir=_second(model_copy, "b"), name="model B")
    services.model_activate(model_version=b, by=users["admin"], reason="test")  # no recompute yet
    client.force_login(users[roles.DERMATOLOGIST])
    html = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
    head = html[html.index('id="pp-model"') : html.index('id="prediction-blocks"')]
    assert "model A" in head and "retired" in head and "model B" not in head  # never names a model not shown
    assert "Active model:" not in head
    assert "retired model, not the one in use" in html
    report = client.get(reverse("reports:patient_report", args=[photo.pk])).content.decode()
    assert "model A" in report and "no longer in use" in report and "in use since" not in report
    # once B has read the photo, B's result is shown and named
    _done(photo, b)
    html = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
    head = html[html.index('id="pp-model"') : html.index('id="prediction-blocks"')]
    assert "model B" in head and "model A" not in head and "retired model" not in html
    state = client.get(reverse("inference:case_prediction_state", args=[case.pk])).json()
    assert "model B" in state["header"] and "model A" not in state["header"]  # the polled header follows
    report = client.get(reverse("reports:patient_report", args=[photo.pk])).content.decode()
    assert "model B" in report and "in use since" in report


class LockFor:
    """Makes the database driver report "database is locked" for matching writes, ``times`` times (or always)."""

    def __init__(self, needle, times=None):
        self.needle, self.times, self.raised = needle, times, 0

    def __call__(self, execute, sql, params, many, context):
        if self.needle in sql and (self.times is None or self.raised < self.times):
            self.raised += 1
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)


def test_recompute_retries_lock_errors_and_finishes(active_model, case, settings):
    photos = [make_photo(case, color=(20 * i, 60, 90)) for i in range(3)]
    lock = LockFor('UPDATE "inference_prediction"', times=5)
    with connection.execute_wrapper(lock):
        counts = services.photos_recompute(model_version=active_model)
    assert lock.raised == 5
    assert counts == {"done": 3}
    done = Prediction.objects.filter(status=PredictionStatus.DONE).values_list("photo", flat=True)
    assert set(done) == {p.pk for p in photos}


def test_a_write_that_stays_locked_leaves_the_prediction_failed_never_running(active_model, case):
    photo = make_photo(case)
    lock = LockFor('UPDATE "inference_prediction" SET "photo_id"')  # the store's full-row write never gets through
    with connection.execute_wrapper(lock):
        counts = services.photos_recompute(model_version=active_model)
    assert counts == {"failed": 1} and lock.raised > 1
    pred = Prediction.objects.get(photo=photo)
    assert pred.status == PredictionStatus.FAILED and "database is locked" in pred.error
    # a later recompute request retries it and finishes
    assert services.photos_recompute(model_version=active_model) == {"done": 1}


def test_stale_running_prediction_is_reclaimed_by_recompute(active_model, case, django_capture_on_commit_callbacks):
    photo = make_photo(case)
    pred = services.prediction_request(photo=photo, enqueue=False)
    Prediction.objects.filter(pk=pred.pk).update(
        status=PredictionStatus.RUNNING, task_id="dead-worker", started_at=timezone.now() - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.photos_recompute(model_version=active_model)
    pred.refresh_from_db()
    assert pred.status == PredictionStatus.DONE and pred.task_id != "dead-worker"
    assert not Prediction.objects.filter(status=PredictionStatus.RUNNING).exists()


def test_model_page_shows_recompute_progress(client, active_model, case, users):
    p1, _ = make_photo(case, color=(1, 2, 3)), make_photo(case, color=(90, 80, 70))
    _done(p1, active_model)
    client.force_login(users[roles.ADMIN])
    html = client.get(reverse("inference:model_detail", args=[active_model.pk])).content.decode()
    assert "1 of 2 photos" in html


def test_training_form_and_run_page_warn_about_small_classes(client, taxonomy, users, case):
    from annotation.models import DiagnosisLabel, SubClass
    from tests.inference.factories import TrainingRunFactory

    make_photo(case)
    DiagnosisLabel.objects.create(
        case=case,
        sub_class=SubClass.objects.get(taxonomy=taxonomy, code="mel"),
        source="histopathology",
        confirmed=True,
    )
    client.force_login(users[roles.ADMIN])
    html = client.get(reverse("inference:training_list")).content.decode()
    assert "class-warning" in html and "<code>mel</code> (1)" in html and "<code>nv</code> (0)" in html
    run = TrainingRunFactory(taxonomy=taxonomy, created_by=users["admin"], label_sources=["histopathology"])
    html = client.get(reverse("inference:training_detail", args=[run.pk])).content.decode()
    assert 'id="run-class-warning"' in html and "<code>mel</code> (1)" in html


def test_engine_warns_about_small_classes(capsys):
    from types import SimpleNamespace

    from annotation.defaults import HAM10000_TAXONOMY
    from inference.ml.prepare import warn_small_classes
    from inference.ml.taxonomy import Taxonomy

    tax = Taxonomy.from_dict(dict(HAM10000_TAXONOMY))
    records = [SimpleNamespace(label="nv")] * 30 + [SimpleNamespace(label="mel")] * 4
    small = dict(warn_small_classes(records, tax))
    assert small["mel"] == 4 and small["df"] == 0 and "nv" not in small
    err = capsys.readouterr().err
    assert "warning: fewer than 20 photos of" in err and "mel (4)" in err
