"""MRMC statistics: a hand-computed example and agreement with independent implementations.

The independent implementations below do NOT use inference.ml.metrics nor reports.mrmc:
- a Mann-Whitney AUC by counting pairs,
- a DBM jackknife-pseudovalue ANOVA (Dorfman-Berbaum-Metz; Hillis 2008 ddf), written from the
  ANOVA formulas on normalised pseudovalues,
- a Monte-Carlo check: the spread of the estimate over many simulated studies (new readers and
  new cases each time) against the OR standard error.
"""

import math

import numpy as np
import pytest
from scipy import stats

from inference.ml import metrics
from reports import mrmc
from reports.simulate import simulate_binary

# ---------------------------------------------------------------- the hand example
# 6 cases: 3 positives (y=1) then 3 negatives. Two readers answer yes (1) / no (0); the model scores.
Y = np.array([1, 1, 1, 0, 0, 0])
R1 = np.array([1, 1, 0, 0, 0, 1])
R2 = np.array([1, 1, 1, 1, 0, 0])
M = np.array([0.9, 0.8, 0.4, 0.3, 0.5, 0.1])
# Structural components (psi = 1 if x > z, 1/2 if tie, 0 else; V10 per positive, V01 per negative):
#   R1: V10 = [5/6, 5/6, 1/3], V01 = [5/6, 5/6, 1/3]  -> AUC 2/3; S10 = S01 = 1/12;  Var = 1/12/3 + 1/12/3 = 1/18
#   R2: V10 = [5/6, 5/6, 5/6], V01 = [1/2, 1, 1]      -> AUC 5/6; S10 = 0, S01 = 1/12; Var = 1/36
#   M : V10 = [1, 1, 2/3],     V01 = [1, 2/3, 1]      -> AUC 8/9; S10 = S01 = 1/27;  Var = 2/81
#   Cov(R1,R2) = 0/3 + (-1/12)/3 = -1/72;  Cov(R1,M) = (1/18)/3 + (-1/36)/3 = 1/108;  Cov(R2,M) = 0 + (-1/36)/3 = -1/108
# Differences D_j = AUC_j - AUC_M: D1 = -2/9, D2 = -1/18, mean -5/36; MS_R = (D1 - D2)^2 / 2 = 1/72.
#   Var(D1) = 1/18 + 2/81 - 2/108 = 5/81;  Var(D2) = 1/36 + 2/81 + 2/108 = 23/324
#   Cov2_D = Cov(R1,R2) - Cov(R1,M) - Cov(R2,M) + Var(M) = -1/72 - 1/108 + 1/108 + 2/81 = 7/648  (> 0, kept)
#   Var(mean D) = (MS_R + J Cov2_D) / J = (1/72 + 14/648) / 2 = 23/1296  -> t = (-5/36) / sqrt(23/1296) = -5/sqrt(23)
#   ddf_H = (MS_R + J Cov2_D)^2 / (MS_R^2 / (J-1)) = (23/648)^2 / (1/72)^2 = (23/9)^2


def test_hand_example_delong_components():
    aucs, cov = metrics.delong_covariance(Y, np.vstack([R1, R2, M]))
    assert aucs == pytest.approx([2 / 3, 5 / 6, 8 / 9])
    expected = np.array([[1 / 18, -1 / 72, 1 / 108], [-1 / 72, 1 / 36, -1 / 108], [1 / 108, -1 / 108, 2 / 81]])
    assert cov == pytest.approx(expected)


def test_hand_example_readers_vs_model():
    r = mrmc.readers_vs_model(Y, np.vstack([R1, R2]), M)
    d = r["difference"]
    assert r["reader_mean_auc"] == pytest.approx(3 / 4)
    assert r["model_auc"] == pytest.approx(8 / 9)
    assert d["estimate"] == pytest.approx(-5 / 36)
    assert d["ms_r"] == pytest.approx(1 / 72)
    assert d["cov2"] == pytest.approx(7 / 648)
    assert d["var_error"] == pytest.approx((5 / 81 + 23 / 324) / 2)
    assert d["se"] == pytest.approx(math.sqrt(23 / 1296))
    assert d["t"] == pytest.approx(-5 / math.sqrt(23))
    assert d["ddf"] == pytest.approx((23 / 9) ** 2)
    assert d["p_value"] == pytest.approx(2 * stats.t.sf(5 / math.sqrt(23), (23 / 9) ** 2))
    q = stats.t.ppf(0.975, (23 / 9) ** 2)
    assert d["ci_low"] == pytest.approx(-5 / 36 - q * math.sqrt(23 / 1296))
    assert d["ci_high"] == pytest.approx(-5 / 36 + q * math.sqrt(23 / 1296))
    assert 0.3 < d["p_value"] < 0.4  # 0.334: two readers and six cases prove nothing


def test_hand_example_reader_ci_and_youden():
    # model ROC / DeLong CI / Youden through inference.ml.metrics, checked by hand
    fpr, tpr, _ = metrics.roc_curve(Y, M)
    # thresholds .9 .8 .5 .4 .3 .1 -> (FPR, TPR): (0,1/3) (0,2/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1)
    assert list(zip(np.round(fpr, 4), np.round(tpr, 4)))[1:] == [
        (0, 0.3333),
        (0, 0.6667),
        (0.3333, 0.6667),
        (0.3333, 1),
        (0.6667, 1),
        (1, 1),
    ]
    a, lo, hi = metrics.delong_ci(Y, M)
    se = math.sqrt(2 / 81)
    assert (a, lo, hi) == pytest.approx((8 / 9, 8 / 9 - 1.959964 * se, 1.0), abs=1e-6)  # upper clipped at 1
    yd = metrics.youden(Y, M)
    # J = TPR - FPR is 2/3 at (0, 2/3) [threshold .8] and at (1/3, 1) [threshold .4]: a tie that floating
    # point rounding decides (1 - 1/3 > 2/3 - 0 by one ulp), so either point is right
    assert yd["j"] == pytest.approx(2 / 3)
    point = (yd["fpr"], yd["tpr"], yd["threshold"])
    assert point == pytest.approx((0, 2 / 3, 0.8)) or point == pytest.approx((1 / 3, 1, 0.4))
    assert yd["sensitivity"] == pytest.approx(yd["tpr"]) and yd["specificity"] == pytest.approx(1 - yd["fpr"])


def test_one_reader_falls_back_to_paired_delong():
    r = mrmc.readers_vs_model(Y, R1[None, :], M)
    ref = metrics.delong_test(Y, R1, M)
    assert r["difference"]["estimate"] == pytest.approx(ref["diff"])
    assert r["p_value"] == pytest.approx(ref["p_value"])


def test_identical_readers_no_reader_variance():
    r = mrmc.readers_vs_model(Y, np.vstack([R1, R1, R1]), M)
    d = r["difference"]
    assert d["ms_r"] == 0 and d["ddf"] is None  # infinite ddf -> normal reference
    # Var(mean) = Cov2_D = Var(D1) when all readers are the same
    assert d["se"] == pytest.approx(math.sqrt(5 / 81))


def test_negative_cov2_is_truncated():
    est = np.array([0.7, 0.8, 0.75])
    cov = np.array([[0.01, -0.004, -0.004], [-0.004, 0.01, -0.004], [-0.004, -0.004, 0.01]])
    r = mrmc.or_one_sample(est, cov)
    ms_r = np.var(est, ddof=1)
    assert r.cov2 == pytest.approx(-0.004)
    assert r.se == pytest.approx(math.sqrt(ms_r / 3))
    assert r.ddf == pytest.approx(2.0)  # (MS_R)^2 / (MS_R^2 / (J-1)) = J - 1


# ---------------------------------------------------------------- independent implementations
def auc_pairs(y, s):
    """Mann-Whitney AUC by counting pairs (independent of inference.ml)."""
    x, z = s[y == 1][:, None], s[y == 0][None, :]
    return float(((x > z) + 0.5 * (x == z)).mean())


def jackknife(y, scores):
    """Leave-one-case-out estimates, (K, J) for the rows of `scores` (brute force)."""
    K = len(y)
    out = np.empty((K, scores.shape[0]))
    for k in range(K):
        keep = np.arange(K) != k
        out[k] = [auc_pairs(y[keep], s[keep]) for s in scores]
    return out


def dbm_one_sample(y, reader_scores, model_score):
    """DBM on normalised jackknife pseudovalues of D_j = AUC_j - AUC_model (random readers and cases).

    Two-way ANOVA without replication (readers x cases): Var(mean) = (MS_R + max(MS_C - MS_RC, 0)) / (J K),
    ddf = (MS_R + max(MS_C - MS_RC, 0))^2 / (MS_R^2 / (J - 1))   (Hillis, Berbaum & Metz 2008)."""
    J, K = reader_scores.shape
    full = np.array([auc_pairs(y, s) for s in reader_scores]) - auc_pairs(y, model_score)
    loo = jackknife(y, np.vstack([reader_scores, model_score[None, :]]))
    d_loo = loo[:, :J] - loo[:, J:]  # (K, J)
    pv = K * full[None, :] - (K - 1) * d_loo  # pseudovalues (K, J)
    pv = pv - pv.mean(axis=0) + full  # normalised: reader means equal the estimates
    Yjk = pv.T  # (J, K)
    g = Yjk.mean()
    ms_r = K * np.sum((Yjk.mean(axis=1) - g) ** 2) / (J - 1)
    ms_c = J * np.sum((Yjk.mean(axis=0) - g) ** 2) / (K - 1)
    resid = Yjk - Yjk.mean(axis=1, keepdims=True) - Yjk.mean(axis=0, keepdims=True) + g
    ms_rc = np.sum(resid**2) / ((J - 1) * (K - 1))
    numer = ms_r + max(ms_c - ms_rc, 0.0)
    se = math.sqrt(numer / (J * K))
    ddf = numer**2 / (ms_r**2 / (J - 1))
    return {
        "estimate": float(full.mean()),
        "se": se,
        "ddf": ddf,
        "t": float(full.mean()) / se,
        "d_loo": d_loo,
        "d": full,
    }


@pytest.fixture(scope="module")
def sim():
    s = simulate_binary(90, 6, seed=11)
    return s["y"], s["confidence"] * np.where(s["answers"] == 1, 1, -1), s["model"]


def test_dbm_equals_or_with_jackknife_covariance(sim):
    """Hillis et al. 2005: OR with jackknife covariances is DBM. Exact (1e-9) agreement checks
    the OR algebra (MS_R, Cov2, truncation, ddf) against the independent ANOVA formulation."""
    y, R, m = sim
    dbm = dbm_one_sample(y, R, m)
    K = len(y)
    d_loo = dbm["d_loo"]
    cov_jack = (K - 1) / K * ((d_loo - d_loo.mean(0)).T @ (d_loo - d_loo.mean(0)))
    r = mrmc.or_one_sample(dbm["d"], cov_jack)
    assert r.estimate == pytest.approx(dbm["estimate"], abs=1e-12)
    assert r.se == pytest.approx(dbm["se"], rel=1e-9)
    assert r.ddf == pytest.approx(dbm["ddf"], rel=1e-9)
    assert r.t == pytest.approx(dbm["t"], rel=1e-9)


def test_or_delong_agrees_with_dbm_jackknife(sim):
    """DeLong and jackknife covariances of AUCs are asymptotically equal (the jackknife is slightly
    larger): the OR-DeLong SE is within 5% of the DBM SE, ddf within 15%, p within 0.02."""
    y, R, m = sim
    dbm = dbm_one_sample(y, R, m)
    r = mrmc.readers_vs_model(y, R, m)["difference"]
    assert r["estimate"] == pytest.approx(dbm["estimate"], abs=1e-12)
    assert r["se"] == pytest.approx(dbm["se"], rel=0.05)
    assert r["ddf"] == pytest.approx(dbm["ddf"], rel=0.15)
    p_dbm = 2 * stats.t.sf(abs(dbm["t"]), dbm["ddf"])
    assert r["p_value"] == pytest.approx(p_dbm, abs=0.02)


def test_or_se_matches_monte_carlo_sampling_sd():
    """The real check of a variance estimate: draw 200 whole studies (new random readers AND new
    random cases each time, 8 readers x 120 cases), compute the mean reader-minus-model AUC in each;
    the OR-DeLong SE (averaged over studies) must match the SD of those estimates within 15%.
    (A naive two-way bootstrap is not used: it counts the reader-by-case error twice and came out
    ~50% too wide here, as Gallas et al. 2009 describe.)"""
    est, ses = [], []
    for rep in range(200):
        s = simulate_binary(120, 8, seed=1000 + rep)
        R = s["confidence"] * np.where(s["answers"] == 1, 1, -1)
        d = mrmc.readers_vs_model(s["y"], R, s["model"])["difference"]
        est.append(d["estimate"])
        ses.append(d["se"])
    sd = float(np.std(est, ddof=1))
    assert float(np.mean(ses)) == pytest.approx(sd, rel=0.15)


def test_null_calibration_small_simulation():
    """Under H0 (readers as good as the model on average) the 95% CI covers 0 about 95% of the time:
    60 simulated studies, coverage between 85% and 100%."""
    rng = np.random.default_rng(3)
    cover = 0
    for _rep in range(60):
        y = (rng.random(80) < 0.4).astype(int)
        z = rng.normal(1.2 * y, 1.0)
        R = z[None, :] + rng.normal(0, 0.8, (5, 80)) + rng.normal(0, 0.15, (5, 1)) * y[None, :]
        m = z + rng.normal(0, 0.8, 80)
        r = mrmc.readers_vs_model(y, R, m)
        cover += r["ci"][0] <= 0 <= r["ci"][1]
    assert 51 <= cover <= 60


# ---------------------------------------------------------------- two tests (aided vs unaided)
def test_two_test_or_equals_one_sample_or_on_differences():
    """With T = 2 the OR F test (Cov1, Cov2, Cov3) is the one-sample OR t test of the per-reader
    differences squared, with the same Hillis ddf: two formulations, one answer."""
    s = simulate_binary(80, 5, seed=3)
    R = s["confidence"] * np.where(s["answers"] == 1, 1, -1)
    R2 = R + np.random.default_rng(1).normal(0, 1.5, R.shape)
    two = mrmc.tests_compared(s["y"], np.stack([R, R2]))
    aucs, S = metrics.delong_covariance(s["y"], np.vstack([R, R2]))
    K = np.hstack([-np.eye(5), np.eye(5)])
    one = mrmc.or_one_sample(K @ aucs, K @ S @ K.T)
    assert two["difference"] == pytest.approx(one.estimate)
    assert two["F"] == pytest.approx(one.t**2)
    assert two["ddf"] == pytest.approx(one.ddf)
    assert two["p_value"] == pytest.approx(one.p_value)
    assert two["se"] == pytest.approx(one.se)
    # Cov2 - Cov3 is what the denominator uses; with a positive reader-case correlation Cov1 > Cov3
    assert two["cov1"] > two["cov3"]


def test_two_test_hand_example():
    """Readers R1, R2 of the hand example (test 1) and the same readers with R2 answering like R1
    (test 2): AUCs [[2/3, 5/6], [2/3, 2/3]], test means 3/4 and 2/3, grand mean 17/24."""
    A = np.array([[2 / 3, 5 / 6], [2 / 3, 2 / 3]])
    aucs, S = metrics.delong_covariance(Y, np.vstack([R1, R2, R1, R1]))
    assert aucs.reshape(2, 2) == pytest.approx(A)
    o = mrmc.or_tests(A, S)
    # interaction residuals are +-1/24 -> MS_TR = 4 (1/24)^2 / 1 = 1/144; MS_T = 2 ((1/24)^2 * 2) = 1/144
    assert o["ms_tr"] == pytest.approx(1 / 144) and o["ms_t"] == pytest.approx(1 / 144)
    # Cov2 (same test, other reader): [-1/72 (test 1), 1/18 (test 2: R1 with R1)] -> mean 1/48
    # Cov3 (other test, other reader): Cov(R1,R1) = 1/18 and Cov(R2,R1) = -1/72 -> mean 1/48; Cov2 - Cov3 = 0
    assert o["cov2"] == pytest.approx(1 / 48) and o["cov3"] == pytest.approx(1 / 48)
    assert o["F"] == pytest.approx(1.0) and o["ddf"] == pytest.approx(1.0)
    assert o["difference"] == pytest.approx(-1 / 12)
