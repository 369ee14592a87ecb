"""Who sees predictions, overlays, models and training runs — every role, pages and API."""

import pytest
from django.urls import reverse

from derm_portal import roles
from inference import services
from inference.models import ModelStatus
from tests.factories import make_photo
from tests.inference.factories import TrainingRunFactory

pytestmark = pytest.mark.django_db
ALL = [*roles.ALL_ROLES, None]
SEES = {roles.DERMATOLOGIST, roles.ADMIN}


@pytest.fixture
def world(active_model, case, users):
    photo = make_photo(case)
    pred = services.prediction_request(photo=photo, enqueue=False)
    services.prediction_execute(prediction_pk=pred.pk, task_id="t")
    pred.refresh_from_db()
    run = TrainingRunFactory(taxonomy=active_model.taxonomy, created_by=users["admin"], status="failed")
    return {
        "case": case,
        "photo": photo,
        "pred": pred,
        "overlay": pred.overlays.first(),
        "model": active_model,
        "run": run,
    }


def login(client, users, make_user, role):
    user = users[role] if role else make_user(None)
    client.force_login(user)
    return user


@pytest.mark.parametrize("role", ALL)
def test_case_page_panel_only_for_prediction_roles(client, users, make_user, world, role):
    login(client, users, make_user, role)
    r = client.get(reverse("annotation:case_detail", args=[world["case"].pk]))
    if role == roles.COORDINATOR:  # coordinators see histopathology-confirmed cases only; this one is not
        assert r.status_code == 404
    elif role in roles.CAN_VIEW_CLINICAL:
        assert r.status_code == 200
        html = r.content.decode()
        top = world["pred"].ranked[0]["sub_class"]
        assert ('id="prediction-panel"' in html) is (role in SEES)
        assert ("Ranked differential" in html) is (role in SEES)
        assert (reverse("inference:overlay_image", args=[world["overlay"].pk]) in html) is (role in SEES)
        if role in SEES:
            assert f'data-sub="{top}"' in html and "percentage points apart" in html
    else:
        assert r.status_code in (403, 404)


@pytest.mark.parametrize("role", ALL)
def test_prediction_endpoints_and_overlay_stream(client, users, make_user, world, role):
    login(client, users, make_user, role)
    urls = [
        reverse("inference:case_prediction_state", args=[world["case"].pk]),
        reverse("inference:photo_prediction_block", args=[world["photo"].pk]),
        reverse("inference:prediction_json", args=[world["pred"].pk]),
        reverse("inference:overlay_image", args=[world["overlay"].pk]),
        f"/api/predictions/?case={world['case'].pk}",
        f"/api/predictions/{world['pred'].pk}/",
        f"/api/overlays/{world['overlay'].pk}/",
        "/api/assessments/",
    ]
    for url in urls:
        r = client.get(url)
        if role in SEES:
            assert r.status_code == 200, url
        else:
            assert r.status_code in (403, 404), url
    r = client.get(reverse("inference:overlay_image", args=[world["overlay"].pk]))
    if role in SEES:
        assert r["Content-Type"] == "image/png" and b"".join(r.streaming_content)[:4] == b"\x89PNG"
        assert "private" in r["Cache-Control"]
        data = client.get(f"/api/predictions/?photo={world['photo'].pk}").json()
        assert data["count"] == 1 and data["results"][0]["malignancy_grade"] in (1, 2, 3)
        assert len(data["results"][0]["overlays"]) == 4 and "box_mass" in data["results"][0]["overlays"][0]


@pytest.mark.parametrize("role", ALL)
def test_writes_need_prediction_role(client, users, make_user, world, role):
    login(client, users, make_user, role)
    photo = world["photo"]
    r = client.post("/api/assessments/", {"photo": photo.pk, "agrees": True}, content_type="application/json")
    assert (r.status_code == 201) is (role in SEES), r.content
    r = client.post("/api/predictions/request/", {"photo": photo.pk}, content_type="application/json")
    assert (r.status_code == 202) is (role in SEES)
    r = client.post(reverse("inference:assessment_create", args=[photo.pk]), {"agrees": "yes"})
    assert (r.status_code == 302) is (role in SEES)
    r = client.post(reverse("inference:case_recompute", args=[world["case"].pk]))
    assert (r.status_code == 302) is (role in SEES)


@pytest.mark.parametrize("role", ALL)
def test_model_pages(client, users, make_user, world, role):
    login(client, users, make_user, role)
    can_view = role in roles.CAN_VIEW_MODELS
    for url in (
        reverse("inference:model_list"),
        reverse("inference:model_detail", args=[world["model"].pk]),
        "/api/models/",
        f"/api/models/{world['model'].pk}/",
    ):
        assert (client.get(url).status_code == 200) is can_view, url
    r = client.get(reverse("inference:model_detail", args=[world["model"].pk]))
    if can_view:
        assert b'id="fig-confusion"' in r.content and b"Flat vs hierarchical" in r.content


@pytest.mark.parametrize("role", ALL)
def test_activation_admin_only(client, users, make_user, world, model_copy, role):
    import shutil

    other = model_copy.parent / "other"
    shutil.copytree(model_copy, other)
    mv = services.model_register(model_dir=other, name="other")
    login(client, users, make_user, role)
    r = client.post(reverse("inference:model_activate", args=[mv.pk]), {"confirm": "1", "reason": "test"})
    r2 = client.post(f"/api/models/{mv.pk}/activate/", {"reason": "test"}, content_type="application/json")
    mv.refresh_from_db()
    if role == roles.ADMIN:
        assert r.status_code == 302 and mv.status == ModelStatus.ACTIVE and r2.status_code == 200
    else:
        assert r.status_code in (403, 404) and r2.status_code in (403, 404) and mv.status == ModelStatus.CANDIDATE


@pytest.mark.parametrize("role", ALL)
def test_training_pages(client, users, make_user, world, role):
    login(client, users, make_user, role)
    can = role in roles.CAN_TRAIN_MODELS
    for url in (
        reverse("inference:training_list"),
        reverse("inference:training_detail", args=[world["run"].pk]),
        reverse("inference:training_state", args=[world["run"].pk]),
        "/api/training-runs/",
    ):
        assert (client.get(url).status_code == 200) is can, url
