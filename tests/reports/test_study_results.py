"""Results of a study: the hand example through the whole stack, multi-class, aided, cache, exports."""

import csv
import io
import math
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from derm_portal import roles
from inference.ml import metrics
from reports import results, services
from reports.models import Session
from tests.reports.factories import build_study, read_all

TRUTHS = ("mel", "mel", "mel", "nv", "nv", "nv")  # EXT-000..EXT-005
MODEL_MEL = [0.9, 0.8, 0.4, 0.3, 0.5, 0.1]  # the hand example of test_mrmc.py
R1 = ["pos", "pos", "neg", "neg", "neg", "pos"]
R2 = ["pos", "pos", "pos", "pos", "neg", "neg"]


def _probs(p_mel):
    rest = (1 - p_mel) / 6
    return dict.fromkeys(("nv", "akiec", "bcc", "bkl", "df", "vasc"), rest) | {"mel": p_mel}


@pytest.fixture
def hand_study(taxonomy, users, make_user):
    r2 = make_user(roles.READER, first_name="Second", last_name="Reader")
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=TRUTHS,
        confidence="none",
        readers=[(users[roles.READER], "resident"), (r2, "expert")],
        model_probs={f"EXT-{i:03d}": _probs(p) for i, p in enumerate(MODEL_MEL)},
    )
    read_all(study, users[roles.READER], {f"EXT-{i:03d}": a for i, a in enumerate(R1)})
    read_all(study, r2, {f"EXT-{i:03d}": a for i, a in enumerate(R2)})
    study.refresh_from_db()
    return study


def test_binary_results_match_the_hand_example(hand_study):
    res = results.reader_study_results(study=hand_study, use_cache=False)
    task = res["tasks"][0]
    assert (task["n_pos"], task["n_neg"]) == (3, 3)
    # model: AUC 8/9 with DeLong variance 2/81, through inference.ml.metrics
    assert task["model"]["auc"] == pytest.approx(8 / 9)
    se = math.sqrt(2 / 81)
    # the interval is built on the logit scale (stays inside (0, 1) near AUC 1)
    lg, half = math.log(8), stats.norm.ppf(0.975) * se / (8 / 9 * 1 / 9)
    assert task["model"]["ci_low"] == pytest.approx(1 / (1 + math.exp(-(lg - half))))
    assert task["model"]["ci_high"] == pytest.approx(1 / (1 + math.exp(-(lg + half)))) and task["model"]["ci_high"] < 1
    assert task["model"]["youden"]["j"] == pytest.approx(2 / 3)
    # readers: R1 sens 2/3 spec 2/3; R2 sens 1 spec 2/3 -> FPR 1/3 both; mean reader TPR 5/6
    r1, r2 = task["readers"]
    assert (r1["tpr"], r1["fpr"]) == pytest.approx((2 / 3, 1 / 3))
    assert (r2["tpr"], r2["fpr"]) == pytest.approx((1.0, 1 / 3))
    assert (task["mean_reader"]["tpr"], task["mean_reader"]["fpr"]) == pytest.approx((5 / 6, 1 / 3))
    assert r1["auc"] == pytest.approx(2 / 3) and r2["auc"] == pytest.approx(5 / 6)
    assert r1["roc"] is None  # no confidence scale: a point, not a curve
    # MRMC: difference -5/36, t = -5/sqrt(23), ddf (23/9)^2
    m = task["mrmc"]
    assert m["estimate"] == pytest.approx(-5 / 36)
    assert m["difference"]["t"] == pytest.approx(-5 / math.sqrt(23))
    assert m["difference"]["ddf"] == pytest.approx((23 / 9) ** 2)
    assert m["p_value"] == pytest.approx(2 * stats.t.sf(5 / math.sqrt(23), (23 / 9) ** 2))
    assert "Obuchowski" in res["reference"] and "Hillis" in res["reference"]
    # per reader table
    rows = {r["name"]: r for r in res["readers"]}
    assert rows["Second Reader"]["accuracy"] == pytest.approx(5 / 6)
    assert rows["Second Reader"]["sensitivity"] == 1.0 and rows["Second Reader"]["specificity"] == pytest.approx(2 / 3)
    assert all(r["mean_time_s"] is not None for r in res["readers"])


def test_confidence_gives_reader_curves(taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy, truths=TRUTHS, confidence="five")
    conf = {0: 5, 1: 2, 2: 4, 3: 5, 4: 1, 5: 3}
    sr = study.readers.get()
    from reports.models import StudyCase

    while (number := services.reading_next_number(study_reader=sr, session="unaided")) is not None:
        sc = StudyCase.objects.select_related("case").get(study=study, number=number)
        i = int(sc.case.external_id[-3:])
        services.reading_serve(study_reader=sr, study_case=sc, session="unaided")
        services.reading_submit(study_reader=sr, study_case=sc, session="unaided", answer=R1[i], confidence=conf[i])
    study.refresh_from_db()
    task = results.reader_study_results(study=study)["tasks"][0]
    r = task["readers"][0]
    ratings = [conf[i] if R1[i] == "pos" else -conf[i] for i in range(6)]
    assert r["auc"] == pytest.approx(metrics.auc(np.array([1, 1, 1, 0, 0, 0]), ratings))
    assert r["roc"]["fpr"][0] == 0 and r["roc"]["tpr"][-1] == 1


def test_multiclass_one_vs_rest_and_balanced_accuracy(taxonomy, users):
    truths = ("mel", "nv", "bcc", "bkl", "df", "vasc", "mel", "nv")
    study, cases = build_study(
        users=users, taxonomy=taxonomy, truths=truths, question_type="multiclass", class_level="meta", confidence="none"
    )
    # meta truths: melanocytic x4, keratinocytic x2, dermal_vascular x2; the reader calls everything melanocytic
    read_all(study, users[roles.READER], {c.external_id: "melanocytic" for c in cases})
    study.refresh_from_db()
    res = results.reader_study_results(study=study)
    assert [t["key"] for t in res["tasks"]] == ["melanocytic", "keratinocytic", "dermal_vascular"]
    row = res["readers"][0]
    assert row["accuracy"] == pytest.approx(4 / 8)
    assert row["balanced_accuracy"] == pytest.approx((1 + 0 + 0) / 3)
    # the model puts 0.88 on the true sub-class -> perfect one-vs-rest AUC and accuracy
    assert all(t["model"]["auc"] == pytest.approx(1.0) for t in res["tasks"])
    assert res["model_summary"]["accuracy"] == 1.0 and res["model_summary"]["balanced_accuracy"] == 1.0
    mel_task = res["tasks"][0]
    assert (mel_task["readers"][0]["tpr"], mel_task["readers"][0]["fpr"]) == (1.0, 1.0)


def test_aided_changes_and_harm(taxonomy, users):
    study, cases = build_study(users=users, taxonomy=taxonomy, truths=TRUTHS, aided=True, confidence="none")
    reader = users[roles.READER]
    truth = {c.external_id: ("pos" if t == "mel" else "neg") for c, t in zip(cases, TRUTHS)}
    read_all(study, reader, truth)  # perfect unaided
    worse = dict(truth, **{"EXT-000": "neg"})  # one right -> wrong with the AI
    read_all(study, reader, worse, session=Session.AIDED)
    study.refresh_from_db()
    res = results.reader_study_results(study=study)
    a = res["aided"][0]
    assert (a["accuracy_unaided"], a["accuracy_aided"]) == pytest.approx((1.0, 5 / 6))
    assert a["delta_sensitivity"] == pytest.approx(-1 / 3) and a["delta_specificity"] == 0
    assert (a["correct_to_wrong"], a["wrong_to_correct"], a["harmed"]) == (1, 0, True)
    assert res["aided_tasks"][0]["readers"][0]["tpr"] == pytest.approx(2 / 3)
    assert res["aided_tasks"][0]["aided_vs_unaided"] is None  # one reader: no reader variance to estimate


def test_aided_vs_unaided_or_two_tests(taxonomy, users, make_user):
    r2 = make_user(roles.READER)
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=TRUTHS,
        aided=True,
        confidence="none",
        readers=[(users[roles.READER], "intern"), (r2, "expert")],
    )
    ids = [f"EXT-{i:03d}" for i in range(6)]
    read_all(study, users[roles.READER], dict(zip(ids, R1)))
    read_all(study, r2, dict(zip(ids, R2)))
    read_all(study, users[roles.READER], dict(zip(ids, R1)), session=Session.AIDED)
    read_all(study, r2, dict(zip(ids, R1)), session=Session.AIDED)
    study.refresh_from_db()
    o = results.reader_study_results(study=study)["aided_tasks"][0]["aided_vs_unaided"]
    # the same numbers as test_mrmc.test_two_test_hand_example
    assert o["test_means"] == pytest.approx([3 / 4, 2 / 3])
    assert o["F"] == pytest.approx(1.0) and o["difference"] == pytest.approx(-1 / 12)


def test_results_cached_until_a_reading_changes(taxonomy, users, make_user, django_assert_max_num_queries):
    r2 = make_user(roles.READER)
    study, cases = build_study(
        users=users,
        taxonomy=taxonomy,
        truths=TRUTHS,
        confidence="none",
        readers=[(users[roles.READER], "intern"), (r2, "expert")],
    )
    truth = {c.external_id: ("pos" if t == "mel" else "neg") for c, t in zip(cases, TRUTHS)}
    read_all(study, users[roles.READER], truth)
    study.refresh_from_db()
    first = results.reader_study_results(study=study)
    with django_assert_max_num_queries(0):
        assert results.reader_study_results(study=study) == first
    assert [r["n_read"] for r in first["readers"]] == [6, 0]
    sr2 = study.readers.get(user=r2)
    sc = study.study_cases.get(number=services.reading_next_number(study_reader=sr2, session="unaided"))
    services.reading_serve(study_reader=sr2, study_case=sc, session="unaided")
    services.reading_submit(study_reader=sr2, study_case=sc, session="unaided", answer="neg")
    study.refresh_from_db()
    assert [r["n_read"] for r in results.reader_study_results(study=study)["readers"]] == [6, 1]


def test_exports_csv_charts_pdf_and_api(client, hand_study, users):
    client.force_login(users[roles.COORDINATOR])
    page = client.get(f"/studies/{hand_study.pk}/results/")
    assert page.status_code == 200
    assert b"Readers vs model (MRMC)" in page.content and b"Obuchowski" in page.content
    assert b"False positive rate (1 \\u2212 specificity)" in page.content  # the figure JSON (json_script)
    assert b"True positive rate (sensitivity)" in page.content
    rows = list(csv.DictReader(io.StringIO(client.get(f"/studies/{hand_study.pk}/readings.csv").content.decode())))
    assert len(rows) == 12 and {r["truth_answer"] for r in rows} == {"pos", "neg"}
    assert sum(int(r["correct"]) for r in rows) == 4 + 5
    png = client.get(f"/studies/{hand_study.pk}/charts/pos.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = client.get(f"/studies/{hand_study.pk}/charts/pos.svg").content.decode()
    assert "<svg" in svg and "Model: AUC 0.889" in svg
    pdf = client.get(f"/studies/{hand_study.pk}/report.pdf")
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-", "-"], input=pdf.content, capture_output=True).stdout.decode()
        assert "Readers vs model (MRMC)" in text and "-0.139" in text and "Obuchowski" in text
    api = client.get(f"/api/reader-studies/{hand_study.pk}/results/").json()
    assert api["tasks"][0]["mrmc"]["estimate"] == pytest.approx(-5 / 36)
    readings = client.get(f"/api/reader-studies/{hand_study.pk}/readings/").json()
    assert readings["count"] == 12 and "truth_sub_class" in readings["results"][0]
