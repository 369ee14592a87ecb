"""Urgency tiers in the portal: predictions store the tier (or the reason the model abstains) with the
photo's modality and this site's thresholds; the case page, its JSON and the REST API give advice from
the tier only; admins set other target sensitivities on the model page (thresholds recomputed from the
stored held-out outputs); the model page shows thresholds, calibration, reliability and ROC figures."""

import json
import re

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from annotation import services as annotation_services
from derm_portal import roles
from inference import presenters, selectors
from inference.ml import triage as tri
from inference.ml.taxonomy import Taxonomy
from inference.models import Prediction, PredictionStatus, TriageSetting
from inference.services.triage import triage_targets_set
from inference.tiers import TIERS
from tests.inference.factories import ModelVersionFactory, PredictionFactory
from tests.inference.triage_fixtures import triage_data_photo, triaged_active_model, triaged_model_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def client_for(user):
    c = Client()
    c.force_login(user)
    return c


def triaged_model_dir_of(mv):
    from inference import loader

    return loader.artefact_dir(mv)


def predict(case, user, data, modality, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        photo = annotation_services.photo_attach(
            case=case, data=data, filename="x.jpg", uploaded_by=user, modality=modality
        )
    return Prediction.objects.get(photo=photo)


def test_dermoscopic_photo_gets_a_stored_tier(
    triaged_active_model, triage_data_photo, case, users, django_capture_on_commit_callbacks
):
    pred = predict(
        case, users[roles.DERMATOLOGIST], triage_data_photo, "dermoscopic", django_capture_on_commit_callbacks
    )
    assert pred.status == PredictionStatus.DONE
    assert pred.tier in TIERS and pred.abstain == "" and pred.calibrated is True
    assert 0 <= pred.urgent_probability <= pred.malignant_probability <= 1 + 1e-9
    cfg = tri.read_config(triaged_model_dir_of(triaged_active_model))
    assert pred.triage_thresholds == pytest.approx(tri.plain_thresholds(cfg["thresholds"]))
    assert pred.unfamiliar_score is not None
    view = presenters.prediction_view(pred)
    assert view["triage"]["tier"] == pred.tier and view["triage"]["advice"] == TIERS[pred.tier]["advice"]
    assert "malignancy_advice" not in view
    api = client_for(users[roles.DERMATOLOGIST]).get(f"/api/predictions/{pred.pk}/").json()
    assert api["triage"]["tier"] == pred.tier and api["calibrated"] is True and api["triage"]["reason"]


def test_clinical_photo_against_a_dermoscopy_model_abstains(
    triaged_active_model, triage_data_photo, case, users, django_capture_on_commit_callbacks
):
    pred = predict(case, users[roles.DERMATOLOGIST], triage_data_photo, "clinical", django_capture_on_commit_callbacks)
    assert pred.status == PredictionStatus.DONE and pred.ranked  # the differential is still shown
    assert pred.tier == "" and pred.abstain == "modality"
    assert "this model was trained on dermoscopic photos" in pred.triage_reason
    view = presenters.prediction_view(pred)["triage"]
    assert view["tier"] is None and view["advice"] == "" and "trained on dermoscopic photos" in view["reason"]
    client = client_for(users[roles.DERMATOLOGIST])
    api = client.get(f"/api/predictions/{pred.pk}/").json()
    assert api["triage"]["tier"] is None and api["triage"]["advice"] == ""
    assert "trained on dermoscopic photos" in api["triage"]["reason"]
    block = client.get(reverse("inference:photo_prediction_block", args=[pred.photo_id])).content.decode()
    assert 'data-tier=""' in block and "trained on dermoscopic photos" in block
    assert not any(t["advice"] in block for t in TIERS.values())


def test_a_62_percent_melanoma_is_urgent_on_the_case_page(triaged_model_dir, case, users, taxonomy):
    """The issue's example: "Melanoma 62%, naevus 38%" has S = 2.24 (grade 2); the tier says urgent."""
    tax = Taxonomy.from_json(triaged_model_dir / "taxonomy.json")
    q = np.zeros(len(tax.sub_classes))
    q[tax.sub_classes.index("mel")], q[tax.sub_classes.index("nv")] = 0.62, 0.38
    t = tri.TriageModel.load(triaged_model_dir, tax).assess(q[None], modalities=["dermoscopic"])[0]
    assert t["tier"] == "urgent"
    from tests.factories import make_photo

    photo = make_photo(case, modality="dermoscopic")
    PredictionFactory(
        photo=photo,
        model_version=ModelVersionFactory(taxonomy=taxonomy),
        malignancy_score=2.24,
        malignancy_grade=2,
        tier=t["tier"],
        triage_reason=t["reason"],
        urgent_probability=t["urgent_probability"],
        malignant_probability=t["malignant_probability"],
        triage_thresholds=t["thresholds"],
        calibrated=True,
    )
    html = (
        client_for(users[roles.DERMATOLOGIST])
        .get(reverse("inference:photo_prediction_block", args=[photo.pk]))
        .content.decode()
    )
    assert 'data-tier="urgent"' in html and TIERS["urgent"]["advice"] in html
    assert "S = 2.24" in html and TIERS["refer"]["advice"] not in html and TIERS["routine"]["advice"] not in html


def test_admin_sets_site_targets_and_new_predictions_use_them(
    triaged_active_model, triage_data_photo, case, users, django_capture_on_commit_callbacks
):
    mv = triaged_active_model
    admin = client_for(users[roles.ADMIN])
    url = reverse("inference:model_triage_targets", args=[mv.pk])
    resp = admin.post(
        url, {"urgent_target": "0.99", "malignant_target": "0.98", "high_grade_target": "0.99"}, follow=True
    )
    assert "Thresholds recomputed for this site" in resp.content.decode()
    s = TriageSetting.objects.get(model_version=mv)
    expected = tri.thresholds_for_targets(triaged_model_dir_of(mv), urgent=0.99, malignant=0.98, high_grade=0.99)
    assert (s.urgent_target, s.malignant_target, s.high_grade_target) == (0.99, 0.98, 0.99)
    assert s.result["high_grade"]["target_sensitivity"] == 0.99
    assert s.thresholds == pytest.approx(expected["thresholds"])
    assert selectors.site_thresholds(model_version=mv) == pytest.approx(expected["thresholds"])
    pred = predict(
        case, users[roles.DERMATOLOGIST], triage_data_photo, "dermoscopic", django_capture_on_commit_callbacks
    )
    assert pred.triage_thresholds == pytest.approx(expected["thresholds"])
    page = admin.get(reverse("inference:model_detail", args=[mv.pk])).content.decode()
    assert 'data-source="site"' in page and "This site (in use)" in page
    # back to the training thresholds
    admin.post(url, {"reset": "1"})
    assert not TriageSetting.objects.filter(model_version=mv).exists()


@pytest.mark.parametrize(
    "urgent,malignant,high_grade,message",
    [
        ("abc", "0.95", "0.98", "must be a number"),
        ("0.9", "1.5", "0.98", "between 0.5 and 1"),
        ("", "0.95", "0.98", "must be a number"),
        ("0.9", "0.95", "0.2", "High-grade target sensitivity must be between 0.5 and 1"),
    ],
)
def test_bad_targets_are_refused_with_a_clear_error(
    urgent, malignant, high_grade, message, triaged_active_model, users
):
    resp = client_for(users[roles.ADMIN]).post(
        reverse("inference:model_triage_targets", args=[triaged_active_model.pk]),
        {"urgent_target": urgent, "malignant_target": malignant, "high_grade_target": high_grade},
        follow=True,
    )
    assert message in resp.content.decode() and not TriageSetting.objects.exists()


def test_only_admins_set_targets_and_models_without_calibration_say_so(triaged_active_model, active_model, users):
    resp = client_for(users[roles.DERMATOLOGIST]).post(
        reverse("inference:model_triage_targets", args=[triaged_active_model.pk]),
        {"urgent_target": "0.95", "malignant_target": "0.95"},
    )
    assert resp.status_code == 403 and not TriageSetting.objects.exists()
    with pytest.raises(ValidationError, match="has no triage calibration"):
        triage_targets_set(model_version=active_model, urgent=0.9, malignant=0.95)
    page = (
        client_for(users[roles.ADMIN]).get(reverse("inference:model_detail", args=[active_model.pk])).content.decode()
    )
    assert 'id="triage-missing"' in page


def test_model_page_shows_thresholds_calibration_and_figures(triaged_active_model, users):
    cfg = tri.read_config(triaged_model_dir_of(triaged_active_model))
    page = (
        client_for(users[roles.DERMATOLOGIST])
        .get(reverse("inference:model_detail", args=[triaged_active_model.pk]))
        .content.decode()
    )
    assert 'id="triage-thresholds"' in page and "Chosen at training (in use)" in page
    assert f"{cfg['calibration']['ece_before']:.3f}" in page and f"{cfg['calibration']['ece_after']:.3f}" in page
    assert 'id="triage-targets-form"' not in page  # dermatologists see, admins edit
    assert "need curve points" not in page
    # the high-grade row shows the refer threshold it shares
    row = page[page.index('data-key="high_grade"') :]
    row = row[: row.index("</tr>")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert "High grade kept out of routine" in cells[1] and cells[2] == f"{cfg['thresholds']['malignant']:.3f}"
    start = page.index('id="triage-figures"')
    figs = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    rel, roc = figs["triage_reliability"], figs["triage_roc"]
    assert rel["layout"]["xaxis"]["title"]["text"] and rel["layout"]["yaxis"]["title"]["text"]
    assert {"Before (uncalibrated)", "After temperature scaling"} <= {t["name"] for t in rel["data"]}
    assert roc["layout"]["xaxis"]["title"]["text"].startswith("False positive rate")
    assert sum(1 for t in roc["data"] if "AUC" in t["name"]) == sum(1 for r in cfg["roc"].values() if r)
    admin_page = (
        client_for(users[roles.ADMIN])
        .get(reverse("inference:model_detail", args=[triaged_active_model.pk]))
        .content.decode()
    )
    assert 'id="triage-targets-form"' in admin_page
