"""The model's proposed first box: the photo's lesion outline chosen by the active model's stored
Grad-CAM map of its top class (the map's hot region where the photo shows no clear lesion), in
photo pixels, offered in the editor payload, kept out of agreement unless edited."""

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFilter

from annotation import agreement, boxes
from annotation.proposals import proposal_for
from derm_portal import roles
from inference.ml.proposal import map_box, propose_box
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


def test_map_box_maps_the_hot_region_of_the_centre_square_to_photo_pixels():
    # a 320x160 photo: the model saw the centre 160x160 square (x 80..240); 32 cells of 5 px
    assert map_box(heat((4, 8), (10, 20)), 320, 160, 0.5, smooth=0) == (80 + 50, 20, 80 + 100, 40)
    # only the region holding the peak: a weaker separate blob is left out
    cam = heat((2, 4), (2, 4)) * 0.6
    cam[20:30, 20:30] = 1.0
    assert map_box(cam, 64, 64, 0.5, smooth=0) == (40, 40, 60, 60)
    assert map_box(np.zeros((32, 32)), 64, 64) is None
    # smoothed (the default), scattered hot specks become one region around them
    specks = np.zeros((32, 32), np.float32)
    specks[[10, 12, 14, 16], [10, 14, 12, 16]] = 1.0
    assert map_box(specks, 64, 64, 0.5, smooth=0) == (20, 20, 22, 22)
    x0, y0, x1, y1 = map_box(specks, 64, 64)
    assert x0 <= 20 and y0 <= 20 and x1 >= 34 and y1 >= 34


def skin_photo(size, lesions, lens=False):
    """A skin-coloured photo with dark elliptical lesions (x0, y0, x1, y1), slightly blurred and
    noisy; ``lens``: black corners outside a round dermoscope field."""
    img = Image.new("RGB", size, (214, 170, 150))
    draw = ImageDraw.Draw(img)
    for i, box in enumerate(lesions):
        draw.ellipse(box, fill=(95 + 30 * i, 60, 45))
    if lens:
        mask = Image.new("L", size, 255)
        ImageDraw.Draw(mask).ellipse((-size[0] * 0.08, -size[1] * 0.08, size[0] * 1.08, size[1] * 1.08), fill=0)
        img.paste((5, 5, 5), mask=mask)
    noise = np.random.default_rng(0).normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(
        np.clip(np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), float) + noise, 0, 255).astype(np.uint8)
    )


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_proposal_outlines_the_whole_lesion_where_the_map_lights_only_part_of_it():
    lesion = (150, 60, 330, 200)  # off centre on a 400x300 photo
    img = skin_photo((400, 300), [lesion])
    cam = np.zeros((32, 32), np.float32)
    cam[10:14, 24:28] = 1.0  # the map's heat on the lesion's right part only (centre square x 50..350)
    small = map_box(cam, 400, 300, 0.5, smooth=0)
    box, how = propose_box(img, cam)
    assert how == "outline"
    assert box_iou(box, lesion) > 0.85
    assert box_iou(small, lesion) < 0.2  # the map's hot part alone


def test_of_two_lesions_the_one_under_the_heat_is_proposed_and_the_lens_field_is_not():
    left, right = (40, 110, 130, 190), (250, 90, 340, 180)
    img = skin_photo((400, 300), [left, right], lens=True)
    cam = np.zeros((32, 32), np.float32)
    cam[8:14, 23:27] = 1.0  # over the right one
    box, how = propose_box(img, cam)
    assert how == "outline" and box_iou(box, right) > 0.8
    cam = np.zeros((32, 32), np.float32)
    cam[14:18, 2:6] = 1.0  # over the left one
    box, how = propose_box(img, cam)
    assert how == "outline" and box_iou(box, left) > 0.8


def test_a_photo_without_a_clear_lesion_gets_the_maps_box():
    img = skin_photo((200, 200), [])
    cam = heat((8, 16), (8, 16))
    assert propose_box(img, cam) == (map_box(cam, 200, 200), "map")
    assert propose_box(img, np.zeros((32, 32))) == (None, "the map is empty")


def test_proposal_in_payload_only_from_an_active_models_finished_prediction(client, taxonomy, users):
    photo = make_photo(CaseFactory(), size=(320, 320), color=(100, 60, 50))
    derm, annotator = users[roles.DERMATOLOGIST], users[roles.ANNOTATOR]
    assert proposal_for(photo=photo, user=derm) is None
    stored_prediction(photo, heat((8, 16), (8, 16)), status=ModelStatus.RETIRED)
    assert proposal_for(photo=photo, user=derm) is None
    stored_prediction(photo, heat((8, 16), (8, 24)))
    p = proposal_for(photo=photo, user=derm)
    # a plain photo shows no lesion outline: the (smoothed) map's hot region is proposed
    expected = tuple(round(v) for v in map_box(heat((8, 16), (8, 24)), 320, 320))
    assert expected[0] < 80 and expected[2] > 240  # wider than the hot cells (80, 80, 240, 160)
    assert (p["x0"], p["y0"], p["x1"], p["y1"], p["label"], p["probability"]) == (*expected, "mel", 0.83)
    assert p["source"] == "map"
    # an annotator who may not see predictions gets the box, not the class or probability
    q = proposal_for(photo=photo, user=annotator)
    assert (q["x0"], q["x1"], q["label"], q["probability"]) == (expected[0], expected[2], None, None)
    client.force_login(annotator)
    assert client.get(reverse("workspace-detail", args=[photo.pk])).json()["proposal"]["x1"] == expected[2]
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
