"""The model's proposed first box: from the active model's stored Grad-CAM map of its top
class to a box in photo pixels, offered in the editor payload, kept out of agreement unless
edited."""

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import agreement, boxes
from annotation.proposals import cam_box, proposal_for
from derm_portal import roles
from inference.models import (
    GradCamOverlay,
    ModelStatus,
    ModelVersion,
    Prediction,
    PredictionStatus,
)
from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db


def heat(rows, cols, n=32):
    cam = np.zeros((n, n), np.float32)
    cam[rows[0] : rows[1], cols[0] : cols[1]] = 1.0
    return cam


def stored_prediction(photo, cam, *, status=ModelStatus.ACTIVE, code="mel", probability=0.83):
    """A finished prediction of an active model with its top sub-class's 32x32 map, as inference stores it."""
    mv = ModelVersion.objects.create(
        name=f"m{photo.pk}-{status}",
        taxonomy=photo_taxonomy(),
        status=status,
        artefact_path=f"test-models/proposal-{photo.pk}-{status}",
        activated_at=timezone.now(),
    )
    pred = Prediction.objects.create(
        photo=photo,
        model_version=mv,
        status=PredictionStatus.DONE,
        finished_at=timezone.now(),
        ranked=[{"sub_class": code, "probability": probability}, {"sub_class": "nv", "probability": 0.1}],
    )
    GradCamOverlay.objects.create(
        prediction=pred,
        target_kind="sub",
        target=code,
        rank=0,
        image="overlays/x.png",
        heatmap=np.asarray(cam).tolist(),
    )
    return pred


def photo_taxonomy():
    from annotation.selectors import taxonomy_default

    return taxonomy_default()


def test_cam_box_maps_the_hot_region_of_the_centre_square_to_photo_pixels():
    # a 320x160 photo: the model saw the centre 160x160 square (x 80..240); 32 cells of 5 px
    assert cam_box(heat((4, 8), (10, 20)), 320, 160) == (80 + 50, 20, 80 + 100, 40)
    # only the region holding the peak: a weaker separate blob is left out
    cam = heat((2, 4), (2, 4)) * 0.6
    cam[20:30, 20:30] = 1.0
    assert cam_box(cam, 64, 64) == (40, 40, 60, 60)
    assert cam_box(np.zeros((32, 32)), 64, 64) is None


def test_proposal_in_payload_only_from_an_active_models_finished_prediction(client, taxonomy, users):
    photo = make_photo(CaseFactory(), size=(320, 320), color=(100, 60, 50))
    derm, annotator = users[roles.DERMATOLOGIST], users[roles.ANNOTATOR]
    assert proposal_for(photo=photo, user=derm) is None
    stored_prediction(photo, heat((8, 16), (8, 16)), status=ModelStatus.RETIRED)
    assert proposal_for(photo=photo, user=derm) is None
    stored_prediction(photo, heat((8, 16), (8, 24)))
    p = proposal_for(photo=photo, user=derm)
    assert (p["x0"], p["y0"], p["x1"], p["y1"], p["label"], p["probability"]) == (80, 80, 240, 160, "mel", 0.83)
    # an annotator who may not see predictions gets the box, not the class or probability
    q = proposal_for(photo=photo, user=annotator)
    assert (q["x0"], q["x1"], q["label"], q["probability"]) == (80, 240, None, None)
    client.force_login(annotator)
    assert client.get(reverse("workspace-detail", args=[photo.pk])).json()["proposal"]["x1"] == 240
    # once the annotator has boxes, no proposal is offered
    boxes.annotation_save(photo=photo, user=annotator, boxes=[{"x0": 1, "y0": 1, "x1": 9, "y1": 9, "label": "nv"}])
    assert client.get(reverse("workspace-detail", args=[photo.pk])).json()["proposal"] is None


def test_an_accepted_unchanged_proposal_is_kept_out_of_agreement(taxonomy, make_user):
    photo = make_photo(CaseFactory(), size=(100, 100), color=(10, 60, 50))
    a, b = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    boxes.annotation_save(
        photo=photo, user=a, submit=True, boxes=[{"x0": 10, "y0": 10, "x1": 50, "y1": 50, "label": "mel"}]
    )
    proposed = {"x0": 10, "y0": 10, "x1": 50, "y1": 50, "label": "mel", "origin": "proposed"}
    ann = boxes.annotation_save(photo=photo, user=b, submit=True, boxes=[proposed])
    assert ann.boxes.get().origin == "proposed"
    assert agreement.agreement_report()["per_photo"] == []
