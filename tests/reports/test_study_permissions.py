"""A reader cannot reach truth labels, the model's output of the unaided session, or another
reader's answers through ANY page or API endpoint of the project.

Every URL pattern of the project is enumerated from the resolver, its arguments filled with every
id that matters here (the study, the other study, cases, photos, labels, readings, readers, the
model, case numbers ...) and requested with the reader's session; no response may contain a
marker planted in the truth label, the case references, the patient code, the other reader's
answer or name, or the model's output.
"""

import itertools
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.exceptions import NoReverseMatch

from derm_portal import roles
from reports import services
from reports.models import Reading, Session, StudyCase
from tests.reports.factories import build_study, read_all

TRUTH = "TRUTHMARKER7F3A"  # in the histopathology report text
CASEREF = "CASEREFMARKER"  # prefix of the case external ids
PATIENT = "PATIENTMARKER"  # patient pseudonym
OTHER_COMMENT = "OTHERREADERMARKER9"  # the other reader's comment on each answer
OTHER_NAME = "otherreadermarker"  # the other reader's username
MODEL_P = 0.4321987  # the model's probability for 'bcc' on every case
MODEL_MARKERS = ("0.4321987", "43.2", "43 %", "model-opinion")


def _markers():
    return [TRUTH, CASEREF, PATIENT, OTHER_COMMENT, OTHER_NAME, *MODEL_MARKERS]


@pytest.fixture
def world(taxonomy, users, make_user):
    from annotation.models import Case, DiagnosisLabel, Patient

    other = make_user(roles.READER, username=OTHER_NAME)
    probs = dict.fromkeys(("nv", "mel", "akiec", "bkl", "df", "vasc"), (1 - MODEL_P) / 6) | {"bcc": MODEL_P}
    truths = ("mel", "mel", "nv", "nv")
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=truths,
        aided=True,
        allow_back=True,
        title="Melanoma study ALPHA",
        readers=[(users[roles.READER], "resident"), (other, "expert")],
        model_probs={f"EXT-{i:03d}": probs for i in range(4)},
    )
    for i, c in enumerate(cases):
        Case.objects.filter(pk=c.pk).update(external_id=f"{CASEREF}-{i}")
        Patient.objects.filter(pk=c.patient_id).update(code=f"{PATIENT}-{i}")
    DiagnosisLabel.objects.filter(case__in=cases).update(report_text=f"Pathology: {TRUTH}")
    answers = {f"{CASEREF}-{i}": "pos" for i in range(4)}
    read_all(study, other, answers, comment=OTHER_COMMENT)
    read_all(study, other, answers, session=Session.AIDED, comment=OTHER_COMMENT)
    # a second study the reader is NOT invited to
    study2, cases2 = build_study(
        users=users, taxonomy=taxonomy, truths=("mel", "nv"), readers=[(other, "expert")], title="Naevus study BRAVO"
    )
    # the reader has answered one case (unaided), so own pages have content
    me = study.readers.get(user=users[roles.READER])
    number = services.reading_next_number(study_reader=me, session="unaided")
    sc = StudyCase.objects.get(study=study, number=number)
    services.reading_serve(study_reader=me, study_case=sc, session="unaided")
    services.reading_submit(study_reader=me, study_case=sc, session="unaided", answer="neg", confidence=2)
    return {"study": study, "study2": study2, "cases": cases + cases2, "reader": users[roles.READER], "other": other}


def _walk(patterns, ns=None):
    for p in patterns:
        if isinstance(p, URLResolver):
            inner = f"{ns}:{p.namespace}" if ns and p.namespace else (p.namespace or ns)
            yield from _walk(p.url_patterns, inner)
        elif isinstance(p, URLPattern) and p.name:
            yield (f"{ns}:{p.name}" if ns else p.name), p


def _arg_names(pattern: URLPattern) -> list[str]:
    return list(pattern.pattern.regex.groupindex)


def _candidate_ids(w) -> list[str]:
    from annotation.models import DiagnosisLabel, Photo
    from inference.models import ModelVersion

    ids = {w["study"].pk, w["study2"].pk, 1, 2}
    ids |= {c.pk for c in w["cases"]}
    ids |= set(Photo.objects.filter(case__in=w["cases"]).values_list("pk", flat=True))
    ids |= set(DiagnosisLabel.objects.filter(case__in=w["cases"]).values_list("pk", flat=True))
    ids |= set(Reading.objects.values_list("pk", flat=True))
    ids |= set(w["study"].readers.values_list("pk", flat=True))
    ids |= set(StudyCase.objects.values_list("number", flat=True))
    ids |= set(ModelVersion.objects.values_list("pk", flat=True))
    ids |= {w["other"].pk, w["reader"].pk}
    return sorted(str(i) for i in ids)


def _values(name: str, w, ints):
    if name == "format":
        return ["json"]
    if name == "session":
        return ["unaided", "aided"]
    if name == "fmt":
        return ["png", "svg"]
    if name == "key":
        return ["pos", "neg"]
    if name == "token":
        return ["x" * 43]
    if name == "idx":
        return ["0", "1"]
    if name in ("app_label",):
        return ["reports", "annotation"]
    if name == "url":
        return [""]
    return ints


def _urls(w):
    ints = _candidate_ids(w)
    seen = set()
    for full_name, pattern in _walk(get_resolver().url_patterns):
        names = _arg_names(pattern)
        pools = [_values(n, w, ints) for n in names]
        combos = (
            itertools.product(*pools)
            if len(names) <= 2
            else itertools.product(*(p if i < 2 else p[:2] for i, p in enumerate(pools)))
        )
        for combo in combos:
            try:
                url = reverse(full_name, kwargs=dict(zip(names, combo)))
            except NoReverseMatch:
                continue
            if url not in seen:
                seen.add(url)
                yield full_name, url


def _scan(client, w):
    leaks, ok_pages, n = [], 0, 0
    for name, url in _urls(w):
        if name.endswith("plotly_js"):  # the plotly.js library bundle, no data
            continue
        n += 1
        resp = client.get(url)
        body = b"".join(resp.streaming_content) if resp.streaming else resp.content
        text = body.decode("utf-8", "replace")
        for marker in _markers():
            if marker in text:
                leaks.append((name, url, resp.status_code, marker))
        ok_pages += resp.status_code == 200
    return leaks, ok_pages, n


@pytest.mark.django_db
def test_reader_reaches_no_truth_no_model_no_other_reader_anywhere(world):
    client = Client(raise_request_exception=False)
    client.force_login(world["reader"])
    leaks, ok_pages, n = _scan(client, world)
    print(f"{n} URLs requested as the reader, {ok_pages} answered 200")
    assert n > 150, f"only {n} URLs enumerated"
    assert ok_pages > 3  # the reader's own pages did answer (the test is not vacuous)
    assert not leaks, "\n".join(map(str, leaks))


@pytest.mark.django_db
def test_reader_blocked_from_coordinator_and_clinical_endpoints(world):
    client = Client()
    client.force_login(world["reader"])
    s, photo = world["study"], world["cases"][0].photos.first()
    for url in [
        "/studies/",
        f"/studies/{s.pk}/",
        f"/studies/{s.pk}/results/",
        f"/studies/{s.pk}/readings.csv",
        f"/studies/{s.pk}/report.pdf",
        f"/studies/{s.pk}/charts/pos.png",
        "/api/reader-studies/",
        f"/api/reader-studies/{s.pk}/",
        f"/api/reader-studies/{s.pk}/results/",
        f"/api/reader-studies/{s.pk}/readings/",
        f"/photos/{photo.pk}/file",
        f"/api/photos/{photo.pk}/file/",
        f"/cases/{world['cases'][0].pk}/",
        "/api/labels/",
        "/api/predictions/",
    ]:
        assert client.get(url).status_code in (403, 404), url
    for action in ("open", "close", "invite", "refresh_model"):
        assert client.post(f"/studies/{s.pk}/", {"action": action}).status_code == 403


@pytest.mark.django_db
def test_reader_sees_only_own_answers_and_only_invited_studies(world):
    client = Client()
    client.force_login(world["reader"])
    mine = client.get("/api/my-readings/").json()
    assert mine["count"] == 1 and mine["results"][0]["answer"] == "neg"
    assert set(mine["results"][0]) == {
        "id",
        "study",
        "session",
        "case_number",
        "answer",
        "confidence",
        "comment",
        "answered_at",
    }
    others = Reading.objects.filter(study_reader__user=world["other"]).values_list("pk", flat=True)
    for pk in others:
        assert client.get(f"/api/my-readings/{pk}/").status_code == 404
    s2 = world["study2"]
    assert client.get(f"/reading/{s2.pk}/").status_code == 404
    assert client.get(f"/reading/{s2.pk}/unaided/case/1/").status_code == 404
    assert client.get(f"/reading/{s2.pk}/case/1/photo/0").status_code == 404
    listing = client.get("/reading/").content.decode()
    assert world["study"].title in listing and s2.title not in listing


@pytest.mark.django_db
def test_model_output_only_in_the_aided_session(world):
    """After finishing the unaided session the reader sees the model's differential - and still no truth."""
    client = Client()
    client.force_login(world["reader"])
    s = world["study"]
    url = client.get(f"/reading/{s.pk}/").url
    assert "/unaided/" in url
    page = client.get(url).content.decode()
    assert "model-opinion" not in page and "43 %" not in page
    # cannot jump into the aided session early
    assert client.get(url.replace("/unaided/", "/aided/")).status_code == 302
    me = s.readers.get(user=world["reader"])
    while (number := services.reading_next_number(study_reader=me, session="unaided")) is not None:
        page = client.get(f"/reading/{s.pk}/unaided/case/{number}/")
        assert "model-opinion" not in page.content.decode()
        client.post(f"/reading/{s.pk}/unaided/case/{number}/", {"answer": "pos", "confidence": "3"})
        me.refresh_from_db()
    url = client.get(f"/reading/{s.pk}/").url
    assert "/aided/" in url
    page = client.get(url).content.decode()
    assert "model-opinion" in page and "Basal cell carcinoma" in page and "43 %" in page
    for marker in (TRUTH, CASEREF, PATIENT, OTHER_COMMENT, OTHER_NAME):
        assert marker not in page
    # the unaided answers are locked now
    number = int(re.search(r"/case/(\d+)/", url).group(1))
    assert client.get(f"/reading/{s.pk}/unaided/case/{number}/").status_code == 302


@pytest.mark.django_db
def test_the_scan_detects_leaks_for_a_coordinator(world, users):
    """Control: the same scan as a coordinator (who may see truth, cases and all readings) finds those markers,
    so the reader's clean scan is not an artefact of a blind detector."""
    client = Client(raise_request_exception=False)
    client.force_login(users[roles.COORDINATOR])
    leaks, _, _ = _scan(client, world)
    found = {marker for *_, marker in leaks}
    assert {TRUTH, CASEREF, PATIENT, OTHER_COMMENT, OTHER_NAME} <= found
    # (no page shows per-case model probabilities to a coordinator either; that the model markers are
    # detected when shown is proven by test_model_output_only_in_the_aided_session)
