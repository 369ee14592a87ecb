import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inference.ml import metrics


def _data(seed, n=200, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = y * 0.8 + rng.normal(size=n)
    if ties:
        s = np.round(s, 1)
    return y, s


def _delong_p_by_definition(y, a, b):
    """Two-sided p of the paired DeLong test from the structural components, pair by pair (DeLong 1988)."""
    from scipy.stats import norm

    y = np.asarray(y)
    comps = []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        pos, neg = s[y == 1], s[y == 0]
        psi = [[1.0 if x > z else 0.5 if x == z else 0.0 for z in neg] for x in pos]
        comps.append((np.mean(psi, axis=1), np.mean(psi, axis=0), np.mean(psi)))
    (v10a, v01a, auc_a), (v10b, v01b, auc_b) = comps
    s10, s01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / len(v10a) + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / len(v01a)
    return 2 * norm.sf(abs(auc_a - auc_b) / np.sqrt(var))


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True), (3, False)])
def test_fast_matches_slow_and_sklearn(seed, ties):
    y, s = _data(seed, ties=ties)
    a_fast, v_fast = metrics.delong_auc_variance(y, s)
    a_slow, v_slow = metrics.delong_slow(y, s)
    assert a_fast == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert a_fast == pytest.approx(a_slow, abs=1e-12)
    assert v_fast == pytest.approx(v_slow, rel=1e-9)


def test_covariance_and_paired_test():
    y, s1 = _data(5)
    rng = np.random.default_rng(9)
    s2 = s1 + rng.normal(scale=0.8, size=len(s1))
    aucs, cov = metrics.delong_covariance(y, np.vstack([s1, s2]))
    assert cov.shape == (2, 2)
    assert aucs[0] == pytest.approx(roc_auc_score(y, s1))
    assert cov[0, 0] == pytest.approx(metrics.delong_slow(y, s1)[1], rel=1e-9)
    assert cov[1, 1] == pytest.approx(metrics.delong_slow(y, s2)[1], rel=1e-9)
    t = metrics.delong_test(y, s1, s2)
    assert t["p_value"] == pytest.approx(_delong_p_by_definition(y, s1, s2), rel=1e-9)
    assert t["diff"] == pytest.approx(aucs[0] - aucs[1])
    same = metrics.delong_test(y, s1, s1)
    assert same["p_value"] == pytest.approx(1.0)


def test_ci_and_youden():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    a, lo, hi = metrics.delong_ci(y, s)
    assert lo <= a <= hi and lo >= 0 and hi <= 1
    assert a == pytest.approx(roc_auc_score(y, s))
    yd = metrics.youden(y, s)
    assert yd["sensitivity"] == pytest.approx(0.75) and yd["specificity"] == pytest.approx(1.0)
    assert yd["threshold"] == pytest.approx(0.7)
    fpr, tpr, thr = metrics.roc_curve(y, s)
    assert fpr[0] == 0 and tpr[-1] == 1


def test_perfect_and_degenerate():
    y = np.array([0, 0, 1, 1])
    assert metrics.auc(y, [0, 0.1, 0.5, 0.9]) == 1.0
    assert metrics.auc(y, [1, 1, 1, 1]) == 0.5
    with pytest.raises(ValueError):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_classification_report():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.8 + 0.1
    r = metrics.classification_report_dict(y, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["top3_accuracy"] == 1.0
    assert r["per_class"]["c"]["recall"] == 0.5
    assert r["confusion_matrix_row_percent"][2] == [0.0, 50.0, 50.0]
    want = roc_auc_score(y, p / p.sum(axis=1, keepdims=True), multi_class="ovr", average="macro")
    assert r["macro_auc"] == pytest.approx(want, abs=1e-12)


def test_midranks_match_scipy_definition():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 1.0, 2.0])
    np.testing.assert_allclose(metrics.rankdata(x), [6, 1.5, 4, 4, 7, 1.5, 4])
    y, a, b = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], [0.2, 0.3, 0.5, 0.6, 0.1, 0.7]
    assert metrics.delong_test(y, a, b)["p_value"] == pytest.approx(_delong_p_by_definition(y, a, b), rel=1e-9)


def test_paired_bootstrap_matches_sklearn_and_brackets_the_difference():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from inference.ml.metrics import paired_bootstrap

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    a = np.where(rng.random(400) < 0.6, y, rng.integers(0, 4, 400))
    b = np.where(rng.random(400) < 0.8, y, rng.integers(0, 4, 400))
    r = paired_bootstrap(y, a, b, 4, n_boot=500)
    want = balanced_accuracy_score(y, b) - balanced_accuracy_score(y, a)
    assert abs(r["balanced_accuracy"]["diff"] - want) < 1e-12
    want_f1 = f1_score(y, b, average="macro") - f1_score(y, a, average="macro")
    assert abs(r["macro_f1"]["diff"] - want_f1) < 1e-12
    for k in ("balanced_accuracy", "macro_f1"):
        assert r[k]["ci_low"] < r[k]["diff"] < r[k]["ci_high"]
        assert r[k]["ci_low"] > 0 and r[k]["share_below_zero"] == 0.0  # b is clearly better
    same = paired_bootstrap(y, a, a, 4, n_boot=50)
    assert same["balanced_accuracy"] == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "share_below_zero": 0.0}
    # a class never predicted and a class absent from the truth
    r2 = paired_bootstrap(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), np.array([0, 0, 1, 3]), 4, n_boot=20)
    assert abs(r2["balanced_accuracy"]["diff"] - (0.75 - 0.5)) < 1e-12


# ---------------------------------------------------------------- edge inputs (documented answers)
def test_youden_when_no_threshold_beats_chance_is_consistent_with_its_rule():
    s = np.array([0.0, 1.0])
    yd = metrics.youden([1, 0], s)
    assert yd["sensitivity"] == 0.0 and yd["specificity"] == 1.0 and yd["j"] == 0.0
    pred = s >= yd["threshold"]  # the rule the model summary applies
    assert not pred.any()  # nothing called positive: specificity 1 holds
    assert np.isfinite(yd["threshold"]) and yd["threshold"] > 1.0


@pytest.mark.parametrize("seed", range(6))
def test_youden_rule_reproduces_its_rates(seed):
    y, s = _data(seed, n=60, ties=seed % 2 == 0)
    if seed >= 4:
        s = -s  # worse than chance
    yd = metrics.youden(y, s)
    pred = s >= yd["threshold"]
    assert np.mean(pred[y == 1]) == pytest.approx(yd["sensitivity"])
    assert np.mean(~pred[y == 0]) == pytest.approx(yd["specificity"])


def test_one_positive_or_negative_has_no_delong_interval():
    assert metrics.auc([1, 0], [0.9, 0.1]) == 1.0  # the AUC itself is defined
    with pytest.raises(ValueError, match="at least two positive and two negative"):
        metrics.delong_ci([1, 0], [0.9, 0.1])
    with pytest.raises(ValueError, match="at least two positive and two negative"):
        metrics.delong_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="at least two positive and two negative"):
        metrics.delong_test([1, 1, 1, 0], [0.9, 0.1, 0.5, 0.2], [0.3, 0.4, 0.5, 0.6])
    a, v = metrics.delong_auc_variance([1, 0, 0], [0.9, 0.1, 0.95])
    assert a == 0.5 and np.isnan(v)
    assert np.isnan(metrics.delong_slow([1, 0, 0], [0.9, 0.1, 0.95])[1])
    # the multi-class summary keeps the AUC and leaves the interval out
    macro, per = metrics.one_vs_rest_auc(np.array([0, 1, 1, 2, 2]), np.eye(3)[[0, 1, 1, 2, 2]], ["a", "b", "c"])
    assert per["a"]["auc"] == 1.0 and per["a"]["ci_low"] is None
    assert per["b"]["ci_low"] is not None


def test_nan_scores_are_an_error_not_ranked_highest():
    with pytest.raises(ValueError, match="NaN at position 0"):
        metrics.auc([0, 1, 0, 1], [np.nan, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        metrics.delong_covariance([0, 1, 0, 1], [[0.1, 0.2, 0.3, 0.4], [0.1, np.nan, 0.3, 0.4]])
    with pytest.raises(ValueError, match="NaN"):
        metrics.youden([0, 1, 0, 1], [0.1, 0.2, np.nan, 0.4])
    assert metrics.auc([0, 1, 0, 1], [-np.inf, 0.2, 0.3, np.inf]) == 0.75  # infinities rank normally


@pytest.mark.parametrize("labels", [[0.6, 1, 0, 1], [0, 2, 0, 1], [0, np.nan, 0, 1], ["0", "1", "0", "1"]])
def test_non_binary_labels_are_an_error_not_truncated(labels):
    with pytest.raises(ValueError, match="labels must be"):
        metrics.auc(labels, [0.1, 0.2, 0.3, 0.4])


def test_integral_float_and_bool_labels_are_accepted():
    s = [0.1, 0.2, 0.3, 0.4]
    assert metrics.auc([0.0, 1.0, 0.0, 1.0], s) == metrics.auc([False, True, False, True], s) == 0.75


def test_logit_ci_stays_inside_the_unit_interval():
    lo, hi = metrics.logit_ci(0.99, 0.005)
    assert 0.95 < lo < 0.99 < hi < 1.0
    y = np.r_[np.zeros(30), np.ones(30)]
    s = np.r_[np.linspace(0, 1, 30), np.linspace(0.97, 2, 30)]
    a, lo, hi = metrics.delong_ci(y, s, scale="logit")
    assert a > 0.99 and lo < a < hi < 1.0
    assert metrics.delong_ci(y, s)[2] == 1.0  # the Wald interval hits the bound


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_roc_curve_equals_sklearn(seed, ties):
    from sklearn.metrics import roc_curve as sk

    y, s = _data(seed, n=80, ties=ties)
    fpr, tpr, thr = metrics.roc_curve(y, s)
    f2, t2, th2 = sk(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert thr[0] > s.max()
