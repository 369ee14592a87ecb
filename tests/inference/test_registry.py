"""Model registry: register_model command, taxonomy matching, one active model per taxonomy."""

import json
import shutil

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from annotation.models import Taxonomy
from inference import services
from inference.models import ModelActivation, ModelStatus, ModelVersion
from tests.inference.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def test_register_model_command_matches_default_taxonomy(taxonomy, model_copy, capsys):
    call_command("register_model", str(model_copy), "--name", "tiny v1")
    mv = ModelVersion.objects.get()
    assert mv.name == "tiny v1" and mv.status == ModelStatus.CANDIDATE
    assert mv.taxonomy == taxonomy  # same tree as the portal's HAM10000 taxonomy
    assert mv.artefact_path == "tiny"  # relative to DERM_MODEL_ROOT
    assert mv.data_fingerprint and mv.metrics["hierarchical_product"]["classes"]
    assert "model version" in capsys.readouterr().out
    # idempotent
    call_command("register_model", str(model_copy))
    assert ModelVersion.objects.count() == 1
    # the tiny model has 6 photos a class: the command refuses it without a reason, naming the checks
    with pytest.raises(CommandError, match=r"fewer than 20 photos of .*--reason"):
        call_command("register_model", str(model_copy), "--activate")
    mv.refresh_from_db()
    assert mv.status == ModelStatus.CANDIDATE
    call_command("register_model", str(model_copy), "--activate", "--reason", "demo only")
    mv.refresh_from_db()
    assert mv.status == ModelStatus.ACTIVE and mv.activated_by is None
    log = ModelActivation.objects.filter(model_version=mv).get()
    assert log.override_reason == "demo only" and any("fewer than 20 photos" in c for c in log.concerns)


def test_register_creates_taxonomy_version_when_tree_differs(taxonomy, model_copy):
    tax = json.loads((model_copy / "taxonomy.json").read_text())
    tax["malignancy"]["bkl"] = 2  # a different grading = a different taxonomy
    (model_copy / "taxonomy.json").write_text(json.dumps(tax))
    mv = services.model_register(model_dir=model_copy)
    assert mv.taxonomy != taxonomy
    assert Taxonomy.objects.count() == 2
    assert mv.taxonomy.sub_classes.get(code="bkl").malignancy_grade == 2


def test_register_refuses_incomplete_artefact(taxonomy, model_copy):
    (model_copy / "model.json").unlink()
    with pytest.raises(services.RegistryError, match="not a complete model artefact"):
        services.model_register(model_dir=model_copy)
    assert not ModelVersion.objects.exists()


def test_activation_retires_previous_and_is_logged(taxonomy, model_copy, users):
    second = model_copy.parent / "tiny2"
    shutil.copytree(model_copy, second)
    a = services.model_register(model_dir=model_copy, name="a")
    b = services.model_register(model_dir=second, name="b")
    services.model_activate(model_version=a, by=users["admin"], reason="test")
    services.model_activate(model_version=b, by=users["admin"], note="better", reason="test")
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status) == (ModelStatus.RETIRED, ModelStatus.ACTIVE)
    log = ModelActivation.objects.filter(model_version=b).get()
    assert log.previous == a and log.activated_by == users["admin"] and log.note == "better"
    assert services.model_active_for() == b


@pytest.mark.parametrize("role", ["dermatologist", "annotator", "coordinator", "reader"])
def test_only_admin_activates(taxonomy, model_copy, users, role):
    mv = services.model_register(model_dir=model_copy)
    with pytest.raises(PermissionDenied):
        services.model_activate(model_version=mv, by=users[role])
    mv.refresh_from_db()
    assert mv.status == ModelStatus.CANDIDATE


def test_db_allows_one_active_model_per_taxonomy(taxonomy, model_copy):
    services.model_register(model_dir=model_copy, activate=True, reason="test")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersionFactory(name="rogue", taxonomy=taxonomy, artefact_path="elsewhere", status=ModelStatus.ACTIVE)


def test_activation_with_recompute_predicts_every_photo(
    taxonomy, model_copy, users, case, django_capture_on_commit_callbacks
):
    from inference.models import Prediction, PredictionStatus
    from tests.factories import make_photo

    photos = [make_photo(case, color=(10 * i, 60, 90)) for i in range(3)]
    mv = services.model_register(model_dir=model_copy)
    with django_capture_on_commit_callbacks(execute=True):
        services.model_activate(model_version=mv, by=users["admin"], recompute=True, reason="test")
    assert set(
        Prediction.objects.filter(model_version=mv, status=PredictionStatus.DONE).values_list("photo", flat=True)
    ) == {p.pk for p in photos}
