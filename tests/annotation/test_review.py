"""Two-group review: groups and assignment, no self / own-group review, accept,
fix-and-accept, reject with a pinned comment and the way back to the annotator."""

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from annotation import boxes, review
from annotation.models import AnnotationStatus, Photo, PhotoAnnotation, ReviewComment
from derm_portal import roles
from tests.annotation.factories import AssignmentFactory
from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db
BOX = {"x0": 10, "y0": 10, "x1": 40, "y1": 30, "label": "nv"}


@pytest.fixture
def setup(taxonomy, users, make_user):
    admin = users[roles.ADMIN]
    a1, a2, b1 = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    ga = review.group_set_members(name="A", members=[a1, a2], by=admin)
    gb = review.group_set_members(name="B", members=[b1], by=admin)
    case = CaseFactory()
    photo = make_photo(case, size=(64, 48), color=(61, 122, 183))  # not the default bytes other tests store
    AssignmentFactory(photo=photo, group=ga, assigned_by=admin)
    ann = boxes.annotation_save(photo=photo, user=a1, boxes=[BOX], submit=True)
    return {"admin": admin, "a1": a1, "a2": a2, "b1": b1, "ga": ga, "gb": gb, "photo": photo, "ann": ann}


def test_nobody_reviews_their_own_or_their_groups_work(setup):
    ann = setup["ann"]
    for who, why in ((setup["a1"], "own work"), (setup["a2"], "own group")):
        assert why in review.review_refusal(user=who, annotation=ann)
        with pytest.raises(PermissionDenied):
            review.review_accept(annotation=ann, by=who)
    assert review.review_refusal(user=setup["b1"], annotation=ann) is None
    ann.refresh_from_db()
    assert ann.status == AnnotationStatus.ANNOTATED


def test_admins_in_the_same_group_may_not_review_either(setup, users):
    admin = setup["admin"]
    setup["ga"].members.add(admin)
    with pytest.raises(PermissionDenied):
        review.review_accept(annotation=setup["ann"], by=admin)


def test_photo_assigned_to_my_group_is_not_reviewed_by_me_even_if_annotated_by_an_outsider(setup, make_user):
    outsider = make_user(roles.DERMATOLOGIST)
    ann = boxes.annotation_save(photo=setup["photo"], user=outsider, boxes=[BOX], submit=True)
    assert "assigned to your own group" in review.review_refusal(user=setup["a2"], annotation=ann)


def test_readers_cannot_review(setup, make_user):
    with pytest.raises(PermissionDenied):
        review.review_accept(annotation=setup["ann"], by=make_user(roles.READER))


def test_reject_with_pinned_comment_then_fix_and_accept(setup):
    ann, a1, b1 = setup["ann"], setup["a1"], setup["b1"]
    box = ann.boxes.get()
    with pytest.raises(boxes.AnnotationError, match="needs a comment"):
        review.review_reject(annotation=ann, by=b1, comment="  ")
    review.review_reject(annotation=ann, by=b1, comment="too tight", box_id=box.pk)
    ann.refresh_from_db()
    assert ann.status == AnnotationStatus.REJECTED and ann.reviewer == b1
    c = ReviewComment.objects.get()
    assert (c.box_id, c.x, c.y, c.text, c.resolved) == (box.pk, 25, 10, "too tight", False)
    # back in the annotator's queue, rejected first
    assert setup["photo"] in boxes.queue_to_annotate(user=a1)
    with pytest.raises(boxes.AnnotationError):  # a rejected annotation cannot be accepted before it is fixed
        review.review_accept(annotation=ann, by=b1)
    # the annotator fixes the box (same id: the comment stays pinned) and resubmits
    boxes.annotation_save(photo=setup["photo"], user=a1, boxes=[{**BOX, "id": box.pk, "x1": 50}], submit=True)
    ann.refresh_from_db()
    c.refresh_from_db()
    assert ann.status == AnnotationStatus.ANNOTATED and c.box_id == box.pk and c.resolved
    review.review_accept(annotation=ann, by=b1, note="ok now")
    ann.refresh_from_db()
    assert ann.status == AnnotationStatus.ACCEPTED and ann.review_note == "ok now"
    with pytest.raises(boxes.AnnotationError):
        boxes.annotation_save(photo=setup["photo"], user=a1, boxes=[])


def test_fix_and_accept_changes_boxes_and_flags_it(setup):
    ann = review.review_fix_and_accept(
        annotation=setup["ann"], by=setup["b1"], boxes=[{**BOX, "id": setup["ann"].boxes.get().pk, "label": "mel"}]
    )
    assert ann.status == AnnotationStatus.ACCEPTED and ann.fixed_by_reviewer
    assert ann.boxes.get().sub_class.code == "mel" and ann.boxes.get().annotator == setup["a1"]


def test_reject_box_must_belong_to_the_annotation(setup, make_user):
    other = boxes.annotation_save(photo=setup["photo"], user=make_user(roles.ANNOTATOR), boxes=[BOX])
    with pytest.raises(boxes.AnnotationError, match="not part of this annotation"):
        review.review_reject(annotation=setup["ann"], by=setup["b1"], comment="x", box_id=other.boxes.get().pk)


def test_review_queue_shows_only_other_groups_work(setup):
    assert list(boxes.queue_to_review(user=setup["b1"])) == [setup["ann"]]
    assert list(boxes.queue_to_review(user=setup["a2"])) == []
    assert list(boxes.queue_to_review(user=setup["a1"])) == []


def test_groups_split_in_half_keeps_cases_together(taxonomy, users, make_user):
    admin = users[roles.ADMIN]
    ga = review.group_set_members(name="A", members=[make_user(roles.ANNOTATOR)], by=admin)
    gb = review.group_set_members(name="B", members=[make_user(roles.ANNOTATOR)], by=admin)
    photos = []
    for i in range(6):
        case = CaseFactory()
        photos += [make_photo(case, color=(i * 30, j * 100, 50)) for j in range(1 + i % 2)]  # 1 or 2 photos per case
    counts = review.groups_split(group_a=ga, group_b=gb, photos=Photo.objects.all(), by=admin).counts
    assert sum(counts.values()) == len(photos) == 9
    assert abs(counts["A"] - counts["B"]) <= 2
    for p in photos:
        assert {q.assignment.group_id for q in p.case.photos.all()} == {p.assignment.group_id}
    # a second split does not move anything
    again = review.groups_split(group_a=ga, group_b=gb, photos=Photo.objects.all(), by=admin)
    assert again.counts == {"A": 0, "B": 0} and again.moved == []


def test_split_keeps_submitted_work_reviewable_and_says_what_moved(taxonomy, users, make_user):
    """A submitted a photo before the split; the split must not hand it to B's annotators
    (where B's reviewer could never review it), and a photo wrongly assigned to B moves to A."""
    admin = users[roles.ADMIN]
    a1, b1, b2 = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    ga = review.group_set_members(name="A", members=[a1], by=admin)
    gb = review.group_set_members(name="B", members=[b1, b2], by=admin)
    p1 = make_photo(CaseFactory(), size=(64, 48), color=(10, 20, 30))
    p2 = make_photo(CaseFactory(), size=(64, 48), color=(40, 50, 60))
    AssignmentFactory(photo=p2, group=gb, assigned_by=admin)  # e.g. assigned before a1 changed groups
    ann1 = boxes.annotation_save(photo=p1, user=a1, boxes=[BOX], submit=True)
    ann2 = boxes.annotation_save(photo=p2, user=a1, boxes=[BOX], submit=True)
    for _ in range(3):  # untouched photos that would tip the alternation towards B
        make_photo(CaseFactory(), size=(32, 32), color=(_ * 70, 9, 9))
    split = review.groups_split(group_a=ga, group_b=gb, photos=Photo.objects.all(), by=admin)
    for p in (p1, p2):
        p.refresh_from_db()
        assert p.assignment.group == ga
    assert any(f"Photo {p1.pk}" in m and "went to A" in m for m in split.moved)
    assert any(f"Photo {p2.pk}" in m and "moved from B to A" in m for m in split.moved)
    for reviewer in (b1, b2):
        assert review.review_refusal(user=reviewer, annotation=ann1) is None
        assert set(boxes.queue_to_review(user=reviewer)) == {ann1, ann2}
        assert not set(boxes.queue_to_annotate(user=reviewer)) & {p1, p2}
    review.review_accept(annotation=ann2, by=b1)


def test_only_admins_manage_groups(taxonomy, users):
    for role in (roles.ANNOTATOR, roles.DERMATOLOGIST, roles.COORDINATOR):
        with pytest.raises(PermissionDenied):
            review.group_set_members(name="X", members=[], by=users[role])
    with pytest.raises(boxes.AnnotationError, match="may not annotate"):
        review.group_set_members(name="X", members=[users[roles.READER]], by=users[roles.ADMIN])


@pytest.mark.parametrize(
    "role, status", [(roles.ADMIN, 200), (roles.ANNOTATOR, 403), (roles.DERMATOLOGIST, 403), (roles.READER, 403)]
)
def test_groups_page_is_for_admins(client, users, taxonomy, role, status):
    client.force_login(users[role])
    assert client.get(reverse("annotation:workspace_groups")).status_code == status


def test_groups_page_sets_members_and_splits(client, users, taxonomy, make_user):
    a, b = make_user(roles.ANNOTATOR), make_user(roles.ANNOTATOR)
    for i in range(4):
        make_photo(CaseFactory(), color=(i * 40, 0, 0))
    client.force_login(users[roles.ADMIN])
    client.post(
        reverse("annotation:workspace_groups"),
        {"action": "members", "name_a": "Left", "name_b": "Right", "group_a": [a.pk], "group_b": [b.pk]},
    )
    from annotation.models import AnnotatorGroup

    left, right = AnnotatorGroup.objects.get(name="Left"), AnnotatorGroup.objects.get(name="Right")
    assert list(left.members.all()) == [a] and list(right.members.all()) == [b]
    client.post(reverse("annotation:workspace_groups"), {"action": "split", "group_a": left.pk, "group_b": right.pk})
    assert left.assignments.count() == 2 and right.assignments.count() == 2


def test_review_api_reject_then_annotator_sees_comment(client, setup):
    ann = setup["ann"]
    client.force_login(setup["a2"])
    r = client.post(reverse("review-decide", args=[ann.pk]), {"action": "accept"}, content_type="application/json")
    assert r.status_code == 403
    client.force_login(setup["b1"])
    r = client.post(
        reverse("review-decide", args=[ann.pk]),
        {"action": "reject", "comment": "missed a lesion"},
        content_type="application/json",
    )
    assert r.status_code == 200 and r.json()["annotation"]["status"] == "rejected"
    client.force_login(setup["a1"])
    data = client.get(reverse("workspace-detail", args=[setup["photo"].pk])).json()
    assert data["editable"] and data["annotation"]["comments"][0]["text"] == "missed a lesion"


def test_gold_flag_only_on_accepted_and_by_dermatologists(setup, users):
    with pytest.raises(boxes.AnnotationError):
        review.gold_set(annotation=setup["ann"], by=users[roles.ADMIN])
    review.review_accept(annotation=setup["ann"], by=setup["b1"])
    with pytest.raises(PermissionDenied):
        review.gold_set(annotation=setup["ann"], by=setup["b1"])
    review.gold_set(annotation=setup["ann"], by=users[roles.DERMATOLOGIST])
    setup["ann"].refresh_from_db()
    assert setup["ann"].is_gold


def test_group_queue_one_annotator_per_photo(setup):
    """Within a group, a photo taken by one member leaves the others' queues; a fresh
    assigned photo is in every member's queue; the other group does not see it."""
    fresh = make_photo(CaseFactory(), size=(64, 48), color=(9, 99, 199))
    AssignmentFactory(photo=fresh, group=setup["ga"])
    assert fresh in boxes.queue_to_annotate(user=setup["a1"]) and fresh in boxes.queue_to_annotate(user=setup["a2"])
    assert fresh not in boxes.queue_to_annotate(user=setup["b1"])
    boxes.annotation_save(photo=fresh, user=setup["a2"], boxes=[BOX])  # a draft is enough to take it
    assert fresh in boxes.queue_to_annotate(user=setup["a2"])
    assert fresh not in boxes.queue_to_annotate(user=setup["a1"])


def test_other_annotators_boxes_only_for_reviewers_and_adjudicators(setup, client, users):
    derm = users[roles.DERMATOLOGIST]
    boxes.annotation_save(photo=setup["photo"], user=derm, boxes=[{**BOX, "label": "mel"}], submit=True)
    client.force_login(setup["a2"])  # annotating: independent, sees nothing of the others
    assert client.get(reverse("workspace-detail", args=[setup["photo"].pk])).json()["others"] == []
    client.force_login(setup["b1"])  # reviewing a1's work: sees derm's boxes for comparison
    others = client.get(reverse("review-detail", args=[setup["ann"].pk])).json()["others"]
    assert [(o["annotator"], o["boxes"][0]["label"]) for o in others] == [(derm.username, "mel")]
    client.force_login(derm)  # adjudicator on the photo page: sees a1's boxes
    others = client.get(reverse("workspace-detail", args=[setup["photo"].pk])).json()["others"]
    assert [o["annotator"] for o in others] == [setup["a1"].username]


def test_only_admins_reopen_accepted_work(setup, users):
    review.review_accept(annotation=setup["ann"], by=setup["b1"])
    with pytest.raises(PermissionDenied):
        review.annotation_reopen(annotation=setup["ann"], by=users[roles.DERMATOLOGIST])
    ann = review.annotation_reopen(annotation=setup["ann"], by=setup["admin"])
    assert ann.status == AnnotationStatus.TO_ANNOTATE


def test_photos_of_excluded_cases_leave_the_queue(setup, users):
    from annotation.services import case_set_status

    fresh = make_photo(CaseFactory(), size=(64, 48), color=(9, 99, 199))
    AssignmentFactory(photo=fresh, group=setup["ga"])
    assert fresh in boxes.queue_to_annotate(user=setup["a2"])
    case_set_status(case=fresh.case, status="excluded", exclusion_reason="blur", by=users[roles.ADMIN])
    assert fresh not in boxes.queue_to_annotate(user=setup["a2"])


def test_status_history_and_review_stats(setup):
    from annotation.models import AnnotationEvent

    ann, a1, b1 = setup["ann"], setup["a1"], setup["b1"]
    review.review_reject(annotation=ann, by=b1, comment="redo")
    boxes.annotation_save(photo=setup["photo"], user=a1, boxes=[BOX], submit=True)
    review.review_fix_and_accept(annotation=ann, by=b1, boxes=[{**BOX, "x1": 45}])
    trail = list(
        AnnotationEvent.objects.filter(annotation=ann).values_list("action", "from_status", "to_status", "actor")
    )
    assert trail == [
        ("submit", "to_annotate", "annotated", a1.pk),
        ("reject", "annotated", "rejected", b1.pk),
        ("resubmit", "rejected", "annotated", a1.pk),
        ("fix_accept", "annotated", "accepted", b1.pk),
    ]
    stats = {r["annotator"]: r for r in review.review_stats()}[a1.username]
    assert (stats["submitted"], stats["resubmitted"], stats["accepted"], stats["rejected"]) == (2, 1, 1, 1)
    assert stats["rejection_rate"] == 0.5 and stats["fix_rate"] == 0.5
    history = boxes.annotation_payload(PhotoAnnotation.objects.get(pk=ann.pk))["history"]
    assert [h["action"] for h in history] == ["submit", "reject", "resubmit", "fix_accept"]


def test_expert_reference_becomes_gold_without_peer_review(setup, users, client):
    derm = users[roles.DERMATOLOGIST]
    ann = boxes.annotation_save(photo=setup["photo"], user=derm, boxes=[BOX], submit=True)
    with pytest.raises(boxes.AnnotationError):  # somebody else's unreviewed boxes cannot become gold
        review.gold_set(annotation=setup["ann"], by=derm)
    client.force_login(derm)
    html = client.get(reverse("annotation:workspace_photo", args=[setup["photo"].pk])).content.decode()
    assert "Use as gold reference" in html
    client.post(reverse("annotation:workspace_gold", args=[ann.pk]), {"gold": "1"})
    ann.refresh_from_db()
    assert ann.is_gold and ann.status == AnnotationStatus.ACCEPTED and ann.reviewer == derm
    assert ann.events.last().action == "gold"
    client.force_login(setup["a2"])  # annotators get no such button
    assert (
        "Use as gold reference"
        not in client.get(reverse("annotation:workspace_photo", args=[setup["photo"].pk])).content.decode()
    )


def test_gold_toggle_message_says_what_just_happened(setup, users, client):
    derm = users[roles.DERMATOLOGIST]
    ann = boxes.annotation_save(photo=setup["photo"], user=derm, boxes=[BOX], submit=True)
    client.force_login(derm)
    url = reverse("annotation:workspace_gold", args=[ann.pk])
    page = client.post(url, {"gold": "1"}, follow=True).content.decode()
    assert f"Annotation {ann.pk} is now the gold reference of photo {ann.photo_id}." in page
    page = client.post(url, {"gold": "0"}, follow=True).content.decode()
    assert f"Annotation {ann.pk} is no longer the gold reference of photo {ann.photo_id}." in page
    ann.refresh_from_db()
    assert not ann.is_gold
