"""IoU matching and agreement on hand-made boxes; the per-pair matrix, the
low-agreement list and gold scoring on the database."""

import pytest

from annotation import agreement, boxes, review
from annotation.agreement import iou, match_boxes, photo_agreement
from annotation.models import PhotoAnnotation
from derm_portal import roles
from tests.factories import CaseFactory, make_photo


def B(x0, y0, x1, y1, label="nv", meta="melanocytic"):
    return (x0, y0, x1, y1, label, meta)


def test_iou_by_hand():
    assert iou(B(0, 0, 10, 10), B(0, 0, 10, 10)) == 1.0
    assert iou(B(0, 0, 10, 10), B(10, 0, 20, 10)) == 0.0  # touching edges
    assert iou(B(0, 0, 10, 10), B(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(B(0, 0, 10, 10), B(2, 2, 8, 8)) == pytest.approx(36 / 100)


def test_matching_is_one_to_one_and_maximises_total_iou():
    # greedy would take a0-b0 (IoU .81) and leave a1 with b1 below threshold;
    # the optimal assignment pairs a0-b1 and a1-b0, both >= .5
    a = [B(0, 0, 10, 10), B(1, 0, 11, 10)]
    b = [B(1, 0, 11, 10), B(-1, 0, 9, 10)]
    pairs = match_boxes(a, b, 0.5)
    assert {(i, j) for i, j, _ in pairs} == {(0, 1), (1, 0)}  # total 1.82 beats 0.82 + 0.67
    big = [B(0, 0, 100, 100)]
    assert match_boxes(big, [B(0, 0, 10, 10), B(0, 0, 100, 90)], 0.5) == [(0, 1, pytest.approx(0.9))]
    assert match_boxes(big, [B(0, 0, 60, 60)], 0.5) == []  # IoU .36


def test_photo_agreement_counts_labels_separately():
    a = [B(0, 0, 10, 10, "nv"), B(20, 20, 30, 30, "mel"), B(50, 50, 60, 60, "bcc", "keratinocytic")]
    b = [B(0, 0, 10, 10, "nv"), B(21, 20, 31, 30, "nv")]
    ag = photo_agreement(a, b)
    assert (ag.n_a, ag.n_b, ag.matches) == (3, 2, 2)
    assert ag.f1 == pytest.approx(2 * 2 / 5)
    assert ag.label_agree == 1 and ag.meta_agree == 2 and ag.label_rate == 0.5
    assert ag.mean_iou == pytest.approx((1 + 90 / 110) / 2)
    assert photo_agreement([], []).f1 == 1.0 and photo_agreement([B(0, 0, 1, 1)], []).f1 == 0.0


@pytest.mark.django_db
def test_agreement_report_matrix_low_list_and_gold(taxonomy, users, make_user):
    x, y, z = (
        make_user(roles.ANNOTATOR, username="x"),
        make_user(roles.ANNOTATOR, username="y"),
        make_user(roles.ANNOTATOR, username="z"),
    )
    p1 = make_photo(CaseFactory(), size=(100, 100), color=(1, 2, 3))
    p2 = make_photo(CaseFactory(), size=(100, 100), color=(200, 2, 3))
    box = {"x0": 10, "y0": 10, "x1": 50, "y1": 50, "label": "nv"}
    for u in (x, y):
        boxes.annotation_save(photo=p1, user=u, boxes=[box], submit=True)
    boxes.annotation_save(photo=p2, user=x, boxes=[box], submit=True)
    boxes.annotation_save(photo=p2, user=y, boxes=[{**box, "x0": 60, "x1": 90}], submit=True)  # no overlap
    boxes.annotation_save(photo=p2, user=z, boxes=[{**box, "label": "mel"}])  # draft: left out
    rep = agreement.agreement_report()
    assert rep["annotators"] == ["x", "y"]
    assert rep["matrix"]["x"]["y"] == rep["matrix"]["y"]["x"] == {"photos": 2, "agreement": 0.5, "label_agreement": 1.0}
    assert [r["photo_id"] for r in rep["low_agreement"]] == [p2.pk]
    # z submits on p2 with the same box as x but another label: a label disagreement to adjudicate
    boxes.annotation_save(photo=p2, user=z, boxes=[{**box, "label": "mel"}], submit=True)
    rep = agreement.agreement_report()
    xz = next(r for r in rep["per_photo"] if (r["a"], r["b"]) == ("x", "z"))
    assert xz["agreement"] == 1.0 and xz["label_agreement"] == 0.0 and xz["low"]

    # gold: x's boxes on p1 become the reference after review; y is scored against them
    ann = PhotoAnnotation.objects.get(photo=p1, annotator=x)
    review.review_accept(annotation=ann, by=z)
    review.gold_set(annotation=ann, by=users[roles.DERMATOLOGIST])
    boxes.annotation_save(photo=p1, user=z, boxes=[box, {**box, "x0": 60, "x1": 90}], submit=True)
    scores = {s["annotator"]: s for s in agreement.gold_scores()}
    assert set(scores) == {"y", "z"}
    assert (scores["y"]["precision"], scores["y"]["recall"], scores["y"]["mean_iou"]) == (1.0, 1.0, 1.0)
    assert (scores["z"]["precision"], scores["z"]["recall"], scores["z"]["matched"]) == (0.5, 1.0, 1)
    assert ann.pk not in {r["ann_a"] for r in agreement.agreement_report()["per_photo"]}  # gold is not a rater


@pytest.mark.django_db
def test_agreement_page_and_api(client, taxonomy, users):
    client.force_login(users[roles.ANNOTATOR])
    html = client.get("/annotate/agreement/").content.decode()
    assert html.count('id="review-stats"') == 1 and "<title>Annotator agreement · Derm Portal</title>" in html
    assert client.get("/api/agreement/").json()["pairs"] == []
    client.force_login(users[roles.READER])
    assert client.get("/annotate/agreement/").status_code == 403
    assert client.get("/api/agreement/").status_code == 403


def test_prefilled_unchanged_boxes_do_not_count_as_agreement(client, taxonomy, users, make_user):
    """b opens a's photo, gets a's box pre-filled and submits it unchanged: that is a copy,
    not agreement (it used to count as IoU 1.00). Once b moves the box it is b's own."""
    a, b = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    photo = make_photo(CaseFactory(), size=(100, 80), color=(12, 34, 56))
    boxes.annotation_save(
        photo=photo, user=a, boxes=[{"x0": 10, "y0": 10, "x1": 50, "y1": 40, "label": "nv"}], submit=True
    )
    client.force_login(b)
    from django.urls import reverse

    data = client.get(reverse("workspace-detail", args=[photo.pk])).json()
    prefill = data["prefill"]["boxes"]
    assert prefill[0]["source_box"] and prefill[0]["id"] is None
    saved = boxes.annotation_save(photo=photo, user=b, boxes=prefill, submit=False)
    box = saved.boxes.get()
    assert box.origin == "prefilled" and box.source_box_id == prefill[0]["source_box"]
    assert boxes.box_payload(box)["origin"] == "prefilled"
    boxes.annotation_save(photo=photo, user=b, boxes=[boxes.box_payload(box)], submit=True)
    assert agreement.agreement_report()["per_photo"] == []  # nothing independent to compare
    # a copy whose label or geometry differs is b's own and is compared
    ann = PhotoAnnotation.objects.get(photo=photo, annotator=b)
    ann.status = "to_annotate"
    ann.save()
    moved = {**boxes.box_payload(box), "x1": 60}
    box = boxes.annotation_save(photo=photo, user=b, boxes=[moved], submit=True).boxes.get()
    assert box.origin == "drawn"
    row = agreement.agreement_report()["per_photo"][0]
    assert row["matches"] == 1 and row["mean_iou"] == pytest.approx(1200 / 1500)
    # a new box drawn at the very same place as the copy source but without source is own work too
    c = make_user(roles.ANNOTATOR)
    relabelled = {**prefill[0], "label": "mel"}
    assert boxes.annotation_save(photo=photo, user=c, boxes=[relabelled]).boxes.get().origin == "drawn"
