"""Tiers and thresholds on hand-made probabilities, temperature scaling and ECE, the unfamiliar-photo
detector on generated features (toy taxonomy: red grade 3, blue grade 2, orange and green grade 1)."""

import numpy as np
import pytest

from inference.ml import calibration as cal
from inference.ml import triage as tri
from inference.ml.ood import FeatureOOD, threshold_for
from inference.ml.taxonomy import Taxonomy

from .conftest import TAX

T = Taxonomy.from_dict(TAX)  # sub-classes: red, orange, blue, green
RED, ORANGE, BLUE, GREEN = range(4)


def P(red, orange=0.0, blue=0.0, green=None):
    green = 1.0 - red - orange - blue if green is None else green
    return [red, orange, blue, green]


def test_tiers_from_masses_and_the_top1_rule():
    th = {"urgent": 0.3, "malignant": 0.2}
    probs = np.array(
        [
            P(0.62, 0.38),  # 62 % red: urgent
            P(0.35, 0.65),  # red mass over the urgent threshold: urgent, not top-1
            P(0.05, 0.65, 0.25),  # malignant mass 0.30: refer
            P(0.05, 0.85, 0.05),  # 0.10: routine
            P(0.0, 0.4, 0.55),
        ]
    )  # top-1 blue (grade 2): refer
    codes, forced = tri.tier_codes(probs, T, th)
    assert codes.tolist() == [2, 2, 1, 0, 1]
    assert forced.tolist() == [False, False, False, False, False]
    # thresholds of 1 leave only the top-1 rule: a top-1 grade 3 is still urgent, a top-1 grade 2 refer
    codes, forced = tri.tier_codes(probs, T, {"urgent": 1.0, "malignant": 1.0})
    assert codes.tolist() == [2, 0, 0, 0, 1] and forced.tolist() == [True, False, False, False, True]


def test_a_top1_high_grade_malignancy_is_never_routine():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4) * 0.5, size=500)
    for th in (
        {"urgent": 1.0, "malignant": 1.0},
        {"urgent": 0.99, "malignant": 0.9},
        {"urgent": None, "malignant": None},
    ):
        codes, _ = tri.tier_codes(p, T, th)
        assert (codes[p.argmax(1) == RED] == 2).all()
        assert (codes[p.argmax(1) == BLUE] >= 1).all()


def heldout():
    """Ten red photos with red masses .9 .. .05 (none top-1 below .5), ten blue, twenty benign."""
    red_mass = [0.9, 0.8, 0.45, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05]
    p = [P(r, 1 - r) for r in red_mass]
    p += [P(0.01, 0.99 - b, b) for b in (0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02)]
    p += [P(r, 1 - r - 0.02, 0.02) for r in np.linspace(0.0, 0.2, 20)]
    y = [RED] * 10 + [BLUE] * 10 + [ORANGE] * 20
    return np.array(p), np.array(y)


def test_thresholds_reach_the_target_sensitivity_and_no_more():
    p, y = heldout()
    r = tri.choose_thresholds(p, y, T, urgent=0.9, malignant=0.95)
    # ceil(0.9 x 11) = 10 of the 10 red photos (conformal count): halfway below the 10th red mass (0.05)
    assert r["thresholds"]["urgent"] == pytest.approx(0.025)
    assert r["urgent"]["sensitivity"] == pytest.approx(1.0)
    assert r["urgent"]["threshold"] == r["thresholds"]["urgent"] and r["urgent"]["target_sensitivity"] == 0.9
    assert r["malignant"]["sensitivity"] >= 0.95
    # a 62 % melanoma-like photo is urgent under the chosen thresholds
    codes, _ = tri.tier_codes([P(0.62, 0.38)], T, r["thresholds"])
    assert codes.tolist() == [2]
    # a lower target can only raise the thresholds and the specificity
    lo = tri.choose_thresholds(p, y, T, urgent=0.5, malignant=0.5)
    assert lo["thresholds"]["urgent"] > r["thresholds"]["urgent"]
    assert lo["urgent"]["specificity"] >= r["urgent"]["specificity"]
    # ceil(0.5 x 11) = 6: halfway between the 6th (0.25) and 7th (0.20) red mass
    assert lo["thresholds"]["urgent"] == pytest.approx(0.225) and lo["urgent"]["sensitivity"] == pytest.approx(0.6)
    assert r["grade3_routine_share"] <= 0.1
    assert sum(r["tier_by_grade"]["3"].values()) == 10


def test_the_refer_threshold_keeps_high_grade_photos_out_of_routine():
    """The refer threshold also passes ``high_grade`` of the grade-3 photos (here those the urgent
    threshold misses): the lower of the two thresholds wins, whatever the malignant target allows."""
    p, y = heldout()
    loose = tri.choose_thresholds(p, y, T, urgent=0.5, malignant=0.5, high_grade=0.5)
    # urgent 0.225 leaves the reds of mass .2 .. .05; the malignant target alone stops at 0.205
    assert loose["thresholds"]["malignant"] == pytest.approx(0.205)
    assert loose["grade3_routine_share"] == pytest.approx(0.4)
    strict = tri.choose_thresholds(p, y, T, urgent=0.5, malignant=0.5)  # default high_grade 0.98
    assert strict["targets"]["high_grade"] == 0.98
    # ceil(0.98 x 11) = 11 > 10 reds: all of them, halfway below the lowest red mass (0.05)
    assert strict["thresholds"]["malignant"] == pytest.approx(0.025)
    assert strict["grade3_routine_share"] == 0.0 and strict["high_grade"]["sensitivity"] == 1.0
    assert strict["high_grade"]["threshold"] == strict["thresholds"]["malignant"]
    assert strict["thresholds"]["urgent"] == loose["thresholds"]["urgent"]  # the urgent tier is untouched
    assert strict["malignant"]["specificity"] <= loose["malignant"]["specificity"]  # the price: more referrals


def test_thresholds_without_grades_or_with_bad_targets_are_refused():
    plain = Taxonomy.from_dict({"meta_classes": {"a": ["x", "y"], "b": ["z"]}})
    with pytest.raises(ValueError, match="no malignancy grades"):
        tri.choose_thresholds(np.full((2, 3), 1 / 3), [0, 1], plain)
    assert tri.unavailable(plain)["abstain"] == "no_grades" and tri.unavailable(plain)["tier"] is None
    assert tri.unavailable(T)["reason"] == tri.NO_CALIBRATION
    p, y = heldout()
    with pytest.raises(ValueError, match="target sensitivity"):
        tri.choose_thresholds(p, y, T, urgent=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        tri.tier_codes(p, T, {"urgent": 2.0})


def test_temperature_recovers_a_known_softening_and_lowers_ece():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(4000, 5))
    true = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)  # the truth is 2.5x softer
    y = np.array([rng.choice(5, p=row) for row in true])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))  # the over-confident model
    Tfit = cal.fit_temperature(logp, y)
    assert Tfit == pytest.approx(2.5, rel=0.1)
    before, after = cal.ece(np.exp(logp), y), cal.ece(cal.apply_temperature(logp, Tfit), y)
    assert after < 0.03 < before
    assert cal.nll(logp, y, Tfit) < cal.nll(logp, y, 1.0)


def test_ece_and_reliability_bins_by_hand():
    prob = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    y = np.array([0, 1, 0, 0])
    bins = cal.reliability(prob, y, bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.95)
    assert bins[5]["accuracy"] == 0.5 and bins[5]["confidence"] == pytest.approx(0.55)
    assert cal.ece(prob, y, bins=10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert len(cal.reliability(prob, y)) == cal.ECE_BINS


def test_feature_detector_flags_far_points_and_few_held_out_ones():
    rng = np.random.default_rng(2)
    F, C = 32, 3
    centres = rng.normal(0, 1, (C, F)) * 3 + 10

    def draw(n):
        y = rng.integers(0, C, n)
        return centres[y] + rng.normal(0, 1, (n, F)), y

    ftr, ytr = draw(600)
    fte, _ = draw(300)
    far = rng.normal(0, 1, (50, F)) * 3 - 10  # another region of feature space
    for method in ("combined", "knn", "mahalanobis"):
        det = FeatureOOD.fit(ftr, ytr, C, method)
        det.set_threshold(det.component_scores(fte), 0.05)
        assert det.flag(fte).mean() <= 0.05
        assert det.flag(far).mean() == 1.0
        again = FeatureOOD.from_state(det.state(), det.describe())
        assert np.allclose(again.score(far), det.score(far), rtol=1e-2, atol=1e-2)
        assert again.threshold == det.threshold
    assert threshold_for(np.arange(100.0), 0.05) == 95.0
    with pytest.raises(ValueError, match="no in-distribution scores"):
        threshold_for([], 0.05)


def test_chosen_thresholds_hold_their_targets_on_new_photos_on_average():
    """Red photos' red mass ~ Beta(2, 3) (never top-1 by the rule: orange takes the rest); thresholds
    fitted on 30 red photos, measured on 20,000 new ones: the mean over 300 fits reaches the target."""
    rng = np.random.default_rng(5)
    fresh = rng.beta(2, 3, 20000)
    fresh_sorted = np.sort(fresh)
    sens = []
    for _ in range(300):
        m = rng.beta(2, 3, 30) * 0.49  # keep every red mass below 0.5: the threshold decides
        p = np.array([P(r, 1 - r) for r in m])
        t = tri.choose_thresholds(p, np.full(30, RED), T, urgent=0.9, malignant=0.95)["thresholds"]["urgent"]
        sens.append(1 - np.searchsorted(fresh_sorted, t / 0.49) / len(fresh))
    assert np.mean(sens) >= 0.9
    # the detector's threshold from 40 in-distribution scores: expected false alarms 2/41 (0.049) where
    # the plain 95 % quantile gives more; 1000 draws leave a standard error of about 0.001
    conformal, plain = [], []
    for _ in range(1000):
        ref, new = rng.normal(size=40), rng.normal(size=2000)
        conformal.append(np.mean(new > threshold_for(ref, 0.05)))
        plain.append(np.mean(new > np.quantile(ref, 0.95)))
    assert np.mean(conformal) <= 0.052 and np.mean(plain) > np.mean(conformal) + 0.005


def test_the_differential_on_screen_also_sets_the_floor():
    cfg = {"temperature": 1.0, "thresholds": {"urgent": 0.9, "malignant": 0.9}, "modality": "dermoscopic"}
    model = tri.TriageModel(T, cfg)
    q = np.array([P(0.3, 0.7)])  # product: orange top-1, red mass under the threshold
    assert model.assess(q)[0]["tier"] == "routine"
    flat = np.array([P(0.6, 0.4)])  # a flat differential showing red first
    b = model.assess(q, shown=flat)[0]
    assert b["tier"] == "urgent" and "Red lesion" in b["reason"] and "high-grade" in b["reason"]
    b = model.assess(q, modalities=["clinical"])[0]
    assert b["tier"] is None and b["abstain"] == "modality" and "trained on dermoscopic photos" in b["reason"]
