"""Reader-study services: set-up, opening rules, model outputs, reading flow, timing, sessions.

The study builders live in tests/reports/factories.py, shared with the other tests/reports files.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from annotation import services as ann
from annotation.models import LabelSource, SubClass
from derm_portal import roles
from reports import services
from reports.models import Reading, Session, StudyCase, StudyStatus
from tests.factories import CaseFactory, make_photo
from tests.inference.factories import PredictionFactory
from tests.reports.factories import build_study, make_confirmed_case, make_model_version, read_all


# ------------------------------------------------------------------ set-up
def test_create_validates_question(taxonomy, users):
    coord = users[roles.COORDINATOR]
    with pytest.raises(ValidationError, match="positive"):
        services.study_create(title="x", taxonomy=taxonomy, created_by=coord, question_type="binary", positive_codes=[])
    with pytest.raises(ValidationError, match="Not in the taxonomy"):
        services.study_create(title="x", taxonomy=taxonomy, created_by=coord, positive_codes=["nope"])
    with pytest.raises(ValidationError, match="needs a compared model"):
        services.study_create(
            title="x", taxonomy=taxonomy, created_by=coord, positive_codes=["mel"], aided_session=True
        )
    s = services.study_create(
        title="Grades", taxonomy=taxonomy, created_by=coord, question_type="grade", positive_codes=["mel"]
    )
    assert s.positive_codes == [] and s.status == StudyStatus.DRAFT


def test_cases_need_confirmation_photos_and_get_opaque_numbers(taxonomy, users):
    derm = users[roles.DERMATOLOGIST]
    study = services.study_create(
        title="t", taxonomy=taxonomy, created_by=users[roles.COORDINATOR], positive_codes=["mel"]
    )
    good = [make_confirmed_case(sub_code="mel", taxonomy=taxonomy, by=derm, i=i) for i in range(5)]
    unconfirmed = CaseFactory()
    make_photo(unconfirmed, user=derm)
    ann.label_record(
        case=unconfirmed,
        sub_class=SubClass.objects.get(taxonomy=taxonomy, code="nv"),
        source=LabelSource.CONSENSUS,
        by=derm,
    )
    no_photo = CaseFactory()
    ann.label_record(
        case=no_photo,
        sub_class=SubClass.objects.get(taxonomy=taxonomy, code="nv"),
        source=LabelSource.HISTOPATHOLOGY,
        by=derm,
    )
    out = services.study_cases_add(study=study, cases=good + [unconfirmed, no_photo, good[0]])
    assert out["added"] == 5
    reasons = sorted(r for _, r in out["skipped"])
    assert reasons == ["already in the study", "no histopathology-confirmed label", "no photo"]
    numbers = sorted(study.study_cases.values_list("number", flat=True))
    assert numbers == [1, 2, 3, 4, 5]
    # the reference standard is frozen on the study case
    assert set(study.study_cases.values_list("truth_sub_class__code", flat=True)) == {"mel"}


def test_grade_question_skips_ungraded_and_sample_is_random_subset(taxonomy, users):
    derm = users[roles.DERMATOLOGIST]
    SubClass.objects.filter(taxonomy=taxonomy, code="vasc").update(malignancy_grade=None)
    study = services.study_create(
        title="g", taxonomy=taxonomy, created_by=users[roles.COORDINATOR], question_type="grade"
    )
    cases = [
        make_confirmed_case(sub_code=c, taxonomy=taxonomy, by=derm, i=i)
        for i, c in enumerate(["mel", "bcc", "nv", "vasc"])
    ]
    out = services.study_cases_add(study=study, cases=cases)
    assert out["added"] == 3 and out["skipped"][0][1] == "diagnosis has no malignancy grade"
    more = [make_confirmed_case(sub_code="nv", taxonomy=taxonomy, by=derm, i=10 + i) for i in range(6)]
    from annotation.models import Case

    out = services.study_cases_sample(study=study, queryset=Case.objects.filter(pk__in=[c.pk for c in more]), n=4)
    assert out["added"] == 4 and study.study_cases.count() == 7


def test_only_readers_can_be_invited_once(taxonomy, users, make_user):
    study = services.study_create(
        title="t", taxonomy=taxonomy, created_by=users[roles.COORDINATOR], positive_codes=["mel"]
    )
    with pytest.raises(ValidationError, match="reader role"):
        services.study_reader_invite(study=study, user=users[roles.DERMATOLOGIST], experience="expert", by=None)
    services.study_reader_invite(study=study, user=users[roles.READER], experience="expert", by=None)
    with pytest.raises(ValidationError, match="already invited"):
        services.study_reader_invite(study=study, user=users[roles.READER], experience="intern", by=None)
    with pytest.raises(ValidationError, match="experience"):
        services.study_reader_invite(study=study, user=make_user(roles.READER), experience="guru", by=None)


def test_open_requires_cases_readers_and_both_classes(taxonomy, users):
    study, _ = build_study(users=users, taxonomy=taxonomy, truths=("mel", "mel"), open_it=False)
    problems = services.study_problems(study=study)
    assert any("positives and negatives" in p for p in problems)
    with pytest.raises(ValidationError):
        services.study_open(study=study, by=users[roles.COORDINATOR])


def test_aided_session_needs_model_output_for_every_case(taxonomy, users):
    study, _ = build_study(users=users, taxonomy=taxonomy, aided=True, open_it=False)
    StudyCase.objects.filter(pk=study.study_cases.first().pk).update(model_probs=None)
    problems = services.study_problems(study=study)
    assert any("AI-aided session needs the model's differential for every case; 1 of 6" in p for p in problems)
    with pytest.raises(ValidationError):
        services.study_open(study=study, by=users[roles.COORDINATOR])


def test_model_outputs_from_predictions_mean_over_photos(taxonomy, users):
    derm = users[roles.DERMATOLOGIST]
    mv = make_model_version(taxonomy)
    study = services.study_create(
        title="t", taxonomy=taxonomy, created_by=users[roles.COORDINATOR], positive_codes=["mel"], model_version=mv
    )
    c1 = make_confirmed_case(sub_code="mel", taxonomy=taxonomy, by=derm, i=1, photos=2)
    c2 = make_confirmed_case(sub_code="nv", taxonomy=taxonomy, by=derm, i=5)
    services.study_cases_add(study=study, cases=[c1, c2])
    p1, p2 = c1.photos.all()
    PredictionFactory(
        photo=p1,
        model_version=mv,
        ranked=[{"sub_class": "mel", "probability": 0.8}, {"sub_class": "nv", "probability": 0.2}],
    )
    PredictionFactory(
        photo=p2,
        model_version=mv,
        ranked=[{"sub_class": "mel", "probability": 0.4}, {"sub_class": "nv", "probability": 0.6}],
    )
    out = services.study_model_outputs_refresh(study=study)
    assert out["from_predictions"] == 1 and out["missing"] == 1
    assert "artefact is not available" in out["reason"]
    sc1 = study.study_cases.get(case=c1)
    assert sc1.model_probs == pytest.approx({"mel": 0.6, "nv": 0.4})
    assert study.study_cases.get(case=c2).model_probs is None


def test_training_overlap_from_manifest(taxonomy, users):
    derm = users[roles.DERMATOLOGIST]
    cases = [
        make_confirmed_case(sub_code="mel", taxonomy=taxonomy, by=derm, i=i, external_id=f"HAM_{i}") for i in range(3)
    ]
    mv = make_model_version(taxonomy, manifest={"split": {"train_cases": ["HAM_0"], "test_cases": ["HAM_1"]}})
    study = services.study_create(
        title="t", taxonomy=taxonomy, created_by=users[roles.COORDINATOR], positive_codes=["mel"], model_version=mv
    )
    services.study_cases_add(study=study, cases=cases)
    assert dict(study.study_cases.values_list("case__external_id", "in_training")) == {
        "HAM_0": "yes",
        "HAM_1": "no",
        "HAM_2": "no",
    }
    mv2 = make_model_version(taxonomy, name="test split only", manifest={"split": {"test_cases": ["HAM_1"]}})
    services.study_update(study=study, model_version=mv2)
    services.study_training_overlap(study=study)
    assert dict(study.study_cases.values_list("case__external_id", "in_training")) == {
        "HAM_0": "possible",
        "HAM_1": "no",
        "HAM_2": "possible",
    }
    mv3 = make_model_version(taxonomy, name="no manifest")
    services.study_update(study=study, model_version=mv3)
    services.study_training_overlap(study=study)
    assert set(study.study_cases.values_list("in_training", flat=True)) == {"unknown"}


# ------------------------------------------------------------------ reading
def test_order_is_shuffled_per_reader_and_stable(taxonomy, users, make_user):
    r2 = make_user(roles.READER)
    study, _ = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=("mel",) * 6 + ("nv",) * 6,
        readers=[(users[roles.READER], "intern"), (r2, "expert")],
    )
    a, b = study.readers.order_by("pk")
    oa, ob = services.reader_order(a), services.reader_order(b)
    assert sorted(oa) == sorted(ob) and oa != ob
    assert services.reader_order(a) == oa


def test_reading_flow_times_and_sessions(taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy, aided=True)
    reader = users[roles.READER]
    sr = study.readers.get(user=reader)
    assert services.reader_session(sr) == Session.UNAIDED
    # cannot answer before the case is served, nor in the aided session yet
    sc = StudyCase.objects.get(study=study, number=services.reading_next_number(study_reader=sr, session="unaided"))
    with pytest.raises(PermissionDenied):
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=3)
    with pytest.raises(PermissionDenied):
        services.reading_serve(study_reader=sr, study_case=sc, session="aided")
    r = services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    Reading.objects.filter(pk=r.pk).update(served_at=timezone.now() - timedelta(seconds=7))
    with pytest.raises(ValidationError, match="confidence"):
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos")
    with pytest.raises(ValidationError, match="between 1 and 5"):
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=9)
    with pytest.raises(ValidationError, match="Choose"):
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="mel", confidence=3)
    r = services.reading_submit(
        study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=3, active_ms=999999
    )
    assert 7000 <= r.server_ms < 9000
    assert r.active_ms <= r.server_ms + 5000  # the client cannot claim more time than the server saw
    # no going back in this study
    services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    with pytest.raises(PermissionDenied, match="changing answers"):
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="neg", confidence=3)
    answers = {c.external_id: "pos" for c in cases}
    sr = read_all(study, reader, answers)
    assert sr.unaided_done_at is not None and services.reader_session(sr) == Session.AIDED
    # unaided answers are locked once the aided session starts
    with pytest.raises(PermissionDenied):
        services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    sr = read_all(study, reader, {c.external_id: "neg" for c in cases}, session=Session.AIDED)
    assert services.reader_session(sr) is None
    assert Reading.objects.filter(study_reader=sr, answered_at__isnull=False).count() == 12


def test_allow_back_counts_revisions_and_adds_time(taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy, allow_back=True, confidence="percent")
    sr = study.readers.get(user=users[roles.READER])
    sc = StudyCase.objects.get(study=study, number=services.reading_next_number(study_reader=sr, session="unaided"))
    services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="pos", confidence=70)
    services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
    r = services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer="neg", confidence=55.5)
    assert (r.answer, r.confidence, r.revisions) == ("neg", 55.5, 1)


def test_closed_study_cannot_be_read(taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy)
    services.study_close(study=study, by=users[roles.COORDINATOR])
    sr = study.readers.get(user=users[roles.READER])
    sc = study.study_cases.first()
    with pytest.raises(PermissionDenied, match="not open"):
        services.reading_serve(study_reader=sr, study_case=sc, session="unaided")


def test_pages_walk_through_a_reading(client, taxonomy, users):
    """The HTML flow: my studies -> start -> case page -> answer -> next, through to the end."""
    study, cases = build_study(users=users, taxonomy=taxonomy, confidence="none")
    client.force_login(users[roles.READER])
    page = client.get("/reading/")
    assert page.status_code == 200 and b"Test study" in page.content
    url = client.get(f"/reading/{study.pk}/").url
    for k in range(len(cases)):
        page = client.get(url)
        assert page.status_code == 200, url
        assert f'case <span id="case-position">{k + 1}</span> of {len(cases)}'.encode() in page.content
        assert b"model-opinion" not in page.content
        number = int(url.rstrip("/").rsplit("/", 1)[1])
        photo = client.get(f"/reading/{study.pk}/case/{number}/photo/0")
        assert photo.status_code == 200 and photo["Content-Type"].startswith("image/")
        resp = client.post(url, {"answer": "pos", "active_ms": "1500"})
        assert resp.status_code == 302
        url = client.get(resp.url).url if k < len(cases) - 1 else resp.url
    assert Reading.objects.filter(study_reader__user=users[roles.READER], answered_at__isnull=False).count() == len(
        cases
    )
    done = client.get(f"/reading/{study.pk}/")
    assert done.status_code == 302 and done.url == "/reading/"


def test_case_page_panel_lists_studies_for_coordinators_only(client, taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy)
    client.force_login(users[roles.COORDINATOR])
    page = client.get(f"/cases/{cases[0].pk}/").content.decode()
    assert 'id="reader-study-panel"' in page and "Test study" in page
    client.force_login(users[roles.DERMATOLOGIST])
    assert 'id="reader-study-panel"' not in client.get(f"/cases/{cases[0].pk}/").content.decode()
