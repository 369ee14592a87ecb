"""Training runs from the portal: success registers a candidate with its evaluation; failure and
cancellation leave a clear status and no model (and no artefact directory)."""

import time
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from annotation import services as annotation_services
from annotation.models import SubClass
from inference import jobs, loader, selectors, services
from inference.models import ModelStatus, ModelVersion, TrainingRun, TrainingStatus
from inference.services import training_job
from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db
TINY = {
    "backbone": "tiny",
    "pretrained": "false",
    "image_size": 32,
    "epochs": 1,
    "coarse_epochs": 1,
    "batch_size": 8,
    "threads": 1,
}
COLOURS = {"nv": (120, 70, 40), "mel": (30, 20, 20), "bcc": (230, 180, 190)}


@pytest.fixture
def labelled_cases(taxonomy, users, settings, tmp_path):
    settings.DERM_MODEL_ROOT = str(tmp_path / "models")
    settings.VAR_DIR = tmp_path / "var"
    doc = users["dermatologist"]
    for code, colour in COLOURS.items():
        sub = SubClass.objects.get(taxonomy=taxonomy, code=code)
        for i in range(4):
            case = CaseFactory(created_by=doc)
            for j in range(2):
                make_photo(case, color=(colour[0] + 3 * i, colour[1] + 5 * j, colour[2]), size=(40, 40))
            source = "histopathology" if i < 3 else "consensus"
            annotation_services.label_record(case=case, sub_class=sub, source=source, by=doc)
    return taxonomy


def run_now(run, django_capture_on_commit_callbacks=None):
    return services.training_run_execute(run_pk=run.pk)


def test_unset_image_size_is_chosen_by_the_engine_and_shown(
    client, labelled_cases, users, monkeypatch, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from inference.ml import budget

    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))  # the tiny network, timed at 48 px
    config = {k: v for k, v in TINY.items() if k != "image_size"}
    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(by=users["dermatologist"], label_sources=["histopathology"], config=config)
    run.refresh_from_db()
    assert run.status == TrainingStatus.SUCCEEDED, run.error + run.log
    assert "image size 48 px: training estimated at under 1 min on this machine (budget 45 min)" in run.log
    man = run.model_version.manifest
    assert man["preprocessing"]["size"] == 48 and man["training"]["image_size_choice"]["chosen"] == 48
    client.force_login(users["dermatologist"])
    page = client.get(reverse("inference:model_detail", args=[run.model_version.pk])).content.decode()
    assert (
        "<dt>Image size</dt><dd>48 px: training estimated at under 1 min on this machine (budget 45 min)</dd>" in page
    )
    assert "tiny · 48 px · transfer cut 3 (kept frozen: shared with the fine model)" in page


def test_progressive_plan_is_trained_and_shown(
    client, labelled_cases, users, monkeypatch, django_capture_on_commit_callbacks
):
    """Where 48 px throughout is estimated over the budget and 48 px with the first fine epochs at 32 px
    within it, the run trains that way and the model page says so."""
    from django.urls import reverse

    from inference.ml import budget

    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))
    # 48 px is slow, 32 px fast: 3 fine + 1 coarse epochs at 48 px throughout, 1 + 1 in the progressive
    # plan; the speed puts the default 45-min budget sqrt(2) x above the progressive plan's estimate for
    # the 14 training photos (9 histopathology cases x 2 photos, 2 cases held out)
    ips = 14 * 2 * 2**0.5 * budget.RUN_OVER_PROBE / 60 / budget.DEFAULT_BUDGET_MINUTES
    monkeypatch.setattr(budget, "step_speed", lambda model, size, bs, cl=True: ips if size == 48 else 1e9)
    config = {**{k: v for k, v in TINY.items() if k != "image_size"}, "epochs": 3}
    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(by=users["dermatologist"], label_sources=["histopathology"], config=config)
    run.refresh_from_db()
    assert run.status == TrainingStatus.SUCCEEDED, run.error + run.log
    man = run.model_version.manifest
    assert man["training"]["image_size_choice"]["n_train"] == 14 and man["training"]["progressive_size"] == 32
    client.force_login(users["dermatologist"])
    page = client.get(reverse("inference:model_detail", args=[run.model_version.pk])).content.decode()
    assert "tiny · 48 px (the fine model's first 2 epochs at 32 px) · transfer cut" in page
    assert "48 px, the first 2 of 3 fine epochs at 32 px: training estimated at" in page


def test_training_cases_respect_label_sources(labelled_cases):
    confirmed = selectors.training_cases(taxonomy=labelled_cases, label_sources=["histopathology"])
    both = selectors.training_cases(taxonomy=labelled_cases, label_sources=["histopathology", "consensus"])
    assert len({c for _, _, c in confirmed}) == 9 and len(confirmed) == 18
    assert len({c for _, _, c in both}) == 12 and len(both) == 24


def test_successful_run_registers_candidate(client, labelled_cases, users, django_capture_on_commit_callbacks):
    from django.urls import reverse

    with django_capture_on_commit_callbacks(execute=True):
        run = services.training_run_create(
            by=users["dermatologist"],
            label_sources=["histopathology", "consensus"],
            config={
                **TINY,
                "fine_models": "2",
                "colour_constancy": "shades_of_gray",
                "augment": {"optics_p": 0.5, "jpeg": 30},
            },
            name="demo",
        )
    run.refresh_from_db()
    assert run.status == TrainingStatus.SUCCEEDED, run.error + run.log
    mv = run.model_version
    assert mv.status == ModelStatus.CANDIDATE and mv.taxonomy == labelled_cases and mv.name == "demo"
    assert mv.metrics["hierarchical_product"]["n"] > 0 and "flat" in mv.metrics
    assert (run.n_cases, run.n_photos) == (12, 24)
    assert run.progress["stage"] == "done" and "registered candidate" in run.log
    assert (Path(loader.artefact_dir(mv)) / "model.json").is_file()
    assert mv.manifest["training"]["epochs"] == 1 and mv.manifest["preprocessing"]["size"] == 32
    assert mv.manifest["fine_members"] == 2 and "fine model 2/2 epoch 1/1" in run.log
    assert mv.manifest["preprocessing"]["colour_constancy"] == "shades_of_gray"
    client.force_login(users["dermatologist"])
    page = client.get(reverse("inference:model_detail", args=[mv.pk])).content.decode()
    assert "colour constancy shades of gray" in page
    assert "heads started as linear probes (LP-FT; fine C " in page and ", coarse C " in page  # the default
    assert run.log.count("head probe: L2 strength C") == 3  # two fine models and the coarse model
    assert mv.manifest["training"]["augmentation"]["jpeg"] == 30  # the run's augment setting reached the engine
    assert (
        "other cameras simulated: blur up to 1 px, noise up to 0.03, JPEG down to quality 30, "
        "optics on 50% of the photos"
    ) in page
    # the run is idempotent: a redelivered message does nothing
    assert services.training_run_execute(run_pk=run.pk) == "skipped-succeeded"
    assert ModelVersion.objects.count() == 1


def test_failed_run_leaves_no_model(labelled_cases, users, monkeypatch):
    import inference.ml.train as engine

    def broken(cfg, progress=None, should_stop=None):
        Path(cfg.out).mkdir(parents=True)
        (Path(cfg.out) / "fine.safetensors").write_bytes(b"half")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine, "train", broken)
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    assert run_now(run) == "failed"
    run.refresh_from_db()
    assert run.status == TrainingStatus.FAILED and "out of memory" in run.error and run.model_version is None
    assert not ModelVersion.objects.exists()
    assert list(Path(loader.model_root()).glob("run-*")) == []


def test_registration_failure_is_a_failed_run_without_model(labelled_cases, users, monkeypatch):
    def refuse(**kw):
        raise services.RegistryError("disk full")

    monkeypatch.setattr(training_job, "model_register", refuse)
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    assert run_now(run) == "failed"
    run.refresh_from_db()
    assert run.status == TrainingStatus.FAILED and "disk full" in run.error
    assert not ModelVersion.objects.exists() and list(Path(loader.model_root()).glob("run-*")) == []


def test_cancelled_run_leaves_no_model(labelled_cases, users, monkeypatch):
    import inference.ml.train as engine

    real = engine.train
    seen = []

    def cancel_then_train(cfg, progress=None, should_stop=None):
        def spy(d):
            seen.append(d.get("stage"))
            if d.get("stage") == "fine" and not TrainingRun.objects.filter(cancel_requested=True).exists():
                services.training_run_cancel(run=TrainingRun.objects.get(), by=users["dermatologist"])
            progress(d)

        return real(cfg, progress=spy, should_stop=should_stop)

    monkeypatch.setattr(engine, "train", cancel_then_train)
    monkeypatch.setattr(time, "monotonic", lambda c=iter(range(0, 10**6, 5)): next(c))  # noqa: B008  # no throttling
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    assert run_now(run) == "cancelled"
    run.refresh_from_db()
    assert run.status == TrainingStatus.CANCELLED and run.cancel_requested and run.model_version is None
    assert "fine" in seen and "cancelled" in run.log
    assert not ModelVersion.objects.exists() and list(Path(loader.model_root()).glob("run-*")) == []


def test_cancel_before_start(labelled_cases, users):
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    services.training_run_cancel(run=run, by=users["admin"])
    run.refresh_from_db()
    assert run.status == TrainingStatus.CANCELLED
    assert services.training_run_execute(run_pk=run.pk) == "skipped-cancelled"


def test_not_enough_data_fails_clearly(taxonomy, users, settings, tmp_path):
    settings.DERM_MODEL_ROOT = str(tmp_path / "models")
    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    assert run_now(run) == "failed"
    run.refresh_from_db()
    assert "Not enough data" in run.error


@pytest.mark.parametrize("role", ["annotator", "coordinator", "reader"])
def test_only_trainers_start_runs(taxonomy, users, role):
    with pytest.raises(PermissionDenied):
        services.training_run_create(by=users[role], label_sources=["histopathology"])


def test_config_validation(taxonomy, users):
    with pytest.raises(ValidationError):
        services.training_run_create(by=users["admin"], label_sources=["histopathology"], config={"lr0": 1})
    with pytest.raises(ValidationError):
        services.training_run_create(by=users["admin"], label_sources=["histopathology"], config={"epochs": "-1"})
    with pytest.raises(ValidationError):
        services.training_run_create(by=users["admin"], label_sources=["nonsense"])
    for bad in ("0", "6"):
        with pytest.raises(ValidationError, match="fine_models"):
            services.training_run_create(
                by=users["admin"], label_sources=["histopathology"], config={"fine_models": bad}
            )
    with pytest.raises(ValidationError, match="colour_constancy must be one of none, shades_of_gray"):
        services.training_run_create(
            by=users["admin"], label_sources=["histopathology"], config={"colour_constancy": "grey_world"}
        )
    for bad, msg in (
        ({"blurr": 1}, "unknown augmentation setting.*'blurr'"),
        ({"jpeg": 100}, "jpeg must be 0"),
        ({"noise": "lots"}, "noise must be a number"),
        ("[1, 2]", "augment must be a JSON object"),
        ("{optics_p: 0.5}", "augment must be a JSON object"),
    ):
        with pytest.raises(ValidationError, match=msg):
            services.training_run_create(by=users["admin"], label_sources=["histopathology"], config={"augment": bad})
    run = services.training_run_create(
        by=users["admin"],
        label_sources=["histopathology"],
        config={"epochs": "2", "image_size": "", "pretrained": "false", "augment": {}},
    )
    assert run.config == {"epochs": 2, "pretrained": False}
    run = services.training_run_create(
        by=users["admin"], label_sources=["histopathology"], config={"augment": '{"optics_p": 0.5, "jpeg": 20}'}
    )
    assert run.config == {"augment": {"optics_p": 0.5, "jpeg": 20}}


def test_training_page_starts_run(client, labelled_cases, users, django_capture_on_commit_callbacks, monkeypatch):
    from django.urls import reverse

    monkeypatch.setattr(jobs, "enqueue_training", lambda pk: None)
    client.force_login(users["admin"])
    r = client.get(reverse("inference:training_list"))
    assert b"(9 cases, 18 photos)" in r.content
    assert b'name="colour_constancy"' in r.content
    assert "engine default: blur up to 1 px, noise up to 0.03" in r.content.decode()
    assert "default 12, up to 36 with fewer than 1,200 training photos" in r.content.decode()
    assert (
        "px, default 224 if this machine&#x27;s training is estimated to fit 45 min, else 224 with the first 2/3 of the fine epochs at 160 if that fits, else 160"
        in r.content.decode()
    )
    r = client.post(
        reverse("inference:training_list"), {"source_set": "confirmed", "cameras": "everything"}, follow=True
    )
    assert "Unknown choice for other cameras: &#x27;everything&#x27;" in r.content.decode()
    assert not TrainingRun.objects.exists()
    r = client.post(
        reverse("inference:training_list"),
        {
            "source_set": "confirmed_consensus",
            "epochs": "1",
            "image_size": "64",
            "colour_constancy": "shades_of_gray",
            "cameras": "half_jpeg",
        },
    )
    run = TrainingRun.objects.get()
    assert r.status_code == 302 and run.label_sources == ["consensus", "histopathology"]
    assert run.config == {
        "epochs": 1,
        "image_size": 64,
        "colour_constancy": "shades_of_gray",
        "augment": {"optics_p": 0.5, "jpeg": 20},
    }
    state = client.get(reverse("inference:training_state", args=[run.pk])).json()
    assert state["status"] == "queued" and state["finished"] is False
    r = client.post(reverse("inference:training_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingStatus.CANCELLED


def test_duplicate_message_while_training_is_alive_is_ignored(labelled_cases, users):
    from datetime import timedelta

    from django.utils import timezone

    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(seconds=5), attempts=1
    )
    assert services.training_run_execute(run_pk=run.pk) == "busy"
    run.refresh_from_db()
    assert run.status == TrainingStatus.RUNNING and run.attempts == 1 and not ModelVersion.objects.exists()


def test_redelivered_training_after_worker_death_takes_over(labelled_cases, users):
    from datetime import timedelta

    from django.utils import timezone

    run = services.training_run_create(by=users["admin"], label_sources=["histopathology"], config=TINY)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingStatus.RUNNING,
        heartbeat_at=timezone.now() - services.TRAINING_STALE - timedelta(seconds=1),
        attempts=1,
    )
    assert services.training_run_execute(run_pk=run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.attempts == 2 and run.model_version is not None and ModelVersion.objects.count() == 1


@pytest.mark.parametrize("role", ["admin", "dermatologist", "annotator", "coordinator", "reader"])
def test_training_api_create_and_cancel(client, taxonomy, users, monkeypatch, role):
    monkeypatch.setattr(jobs, "enqueue_training", lambda pk: None)
    client.force_login(users[role])
    r = client.post(
        "/api/training-runs/",
        {"label_sources": ["histopathology", "consensus"], "config": {"epochs": 1}},
        content_type="application/json",
    )
    if role not in ("admin", "dermatologist"):
        assert r.status_code == 403 and not TrainingRun.objects.exists()
        return
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "queued" and body["config"] == {"epochs": 1}
    r = client.post(f"/api/training-runs/{body['id']}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = client.post(
        "/api/training-runs/",
        {"label_sources": ["histopathology"], "config": {"lr0": 5}},
        content_type="application/json",
    )
    assert r.status_code == 400
    r = client.post(
        "/api/training-runs/",
        {"label_sources": ["histopathology"], "config": {"augment": {"optics_p": 2}}},
        content_type="application/json",
    )
    assert r.status_code == 400 and "optics_p must be a share between 0 and 1" in r.content.decode()
    r = client.post(
        "/api/training-runs/",
        {"label_sources": ["histopathology"], "config": {"augment": {"optics_p": 0.5}}},
        content_type="application/json",
    )
    assert r.status_code == 201 and r.json()["config"] == {"augment": {"optics_p": 0.5}}


def test_head_start_line_names_each_probed_stage():
    from inference.presenters import head_start as _head_start

    assert _head_start({}) == "" and _head_start({"fine_training": {}}) == ""  # random heads, older artefacts
    assert _head_start(
        {"fine_training": {"head_probe": {"C": 0.01}}, "coarse_training": {"head_probe": {"C": 0.1}}}
    ) == ("heads started as linear probes (LP-FT; fine C 0.01, coarse C 0.1)")


def test_camera_augmentation_line_names_each_simulated_camera_change():
    from inference.presenters import camera_augmentation as _camera_augmentation

    assert _camera_augmentation({}) == ""  # older artefacts: nothing said
    assert _camera_augmentation({"augmentation": {"blur": 0, "noise": 0.03, "jpeg": 30, "gamma": 0}}) == (
        "noise up to 0.03, JPEG down to quality 30"
    )
    assert _camera_augmentation({"augmentation": {"blur": 1.0, "optics_p": 0.5}}) == (
        "blur up to 1 px, optics on 50% of the photos"
    )
    assert _camera_augmentation({"augmentation": {"blur": 0, "optics_p": 0.5}}) == ""
