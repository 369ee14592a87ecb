"""Multi-reader multi-case (MRMC) analysis of reader AUCs against a model's AUC.

Method: Obuchowski-Rockette (OR) with DeLong covariances, Hillis denominator degrees of freedom.
ROC / AUC / DeLong come from ``inference.ml.metrics`` (not re-implemented here).

References
----------
- Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple readers and
  multiple tests: an ANOVA approach with dependent observations. Commun Stat Simul Comput 1995.
- Hillis SL. A comparison of denominator degrees of freedom methods for multiple observer ROC
  analysis. Stat Med 2007;26:596-619.
- Hillis SL, Berbaum KS, Metz CE. Recent developments in the Dorfman-Berbaum-Metz procedure for
  multireader ROC study analysis. Acad Radiol 2008;15:647-661 (and Hillis, Obuchowski, Schartz,
  Berbaum, "A comparison of the DBM and OR methods", Stat Med 2005: OR with jackknife
  covariances is the DBM procedure).
- DeLong ER, DeLong DM, Clarke-Pearson DL. Biometrics 1988 (covariance of correlated AUCs).

The model as a fixed reader (derivation)
----------------------------------------
J readers read the same N cases; the model scores the same cases. Let A_j be reader j's AUC
and A_M the model's. The OR model for a single test with random readers and random cases is

    A_j = mu + R_j + e_j,      R_j ~ (0, s2_R)  (reader effect, random)
    Var(e_j) = s2_e,  Cov(e_j, e_j') = Cov2  (j != j', same cases: case-sampling correlation)

The model is *one fixed reader*: it has no reader effect, only case-sampling error e_M, which is
correlated with the readers' errors because the cases are the same: Cov(e_j, e_M) = C_jM.
The quantity of interest is delta = mu - theta_M (mean reader AUC minus the model's AUC) and the
estimator is D_bar = mean_j D_j with D_j = A_j - A_M. The D_j follow the same single-test OR
model (R_j is untouched because A_M is common to all j):

    D_j = delta + R_j + (e_j - e_M)
    Var(e_j - e_M)             = s2_e + s2_M - 2 C_jM            (averaged over j: s2_eD)
    Cov(e_j - e_M, e_j' - e_M) = Cov2 - C_jM - C_j'M + s2_M      (averaged over j != j': Cov2_D)

So the case-sampling covariance matrix of the D_j is  S_D = K S K^T  with K = [I_J, -1_J] and S the
(J+1)x(J+1) DeLong covariance matrix of (A_1..A_J, A_M) - all estimated in one call of
``delong_covariance`` on the stacked score matrix. With MS_R = sum_j (D_j - D_bar)^2 / (J - 1)
(= the readers' AUC mean square, A_M cancels), E[MS_R] = s2_R + s2_eD - Cov2_D, hence

    Var(D_bar) = s2_R / J + (s2_eD + (J - 1) Cov2_D) / J   is estimated by   (MS_R + J max(Cov2_D, 0)) / J

(Hillis 2007: Cov2 truncated at 0), and  t = D_bar / sqrt(Var)  has Hillis' denominator degrees of
freedom  ddf_H = (MS_R + J max(Cov2_D, 0))^2 / (MS_R^2 / (J - 1)). 95% CI: D_bar -/+ t_{0.975, ddf_H} SE.
With J = 1 there is no reader variance to estimate: the paired DeLong test (fixed reader) is used.
Conclusions generalise to the population of readers like these and of cases like these; the model's
AUC uncertainty (case sampling) is included, the model is not treated as a known constant.

AI-aided vs unaided (two tests): ``or_tests`` is the classical OR analysis of T tests x J readers with
the error covariances Cov1 (same reader, other test), Cov2 (other reader, same test), Cov3 (other
reader, other test) averaged from the DeLong covariance matrix of all T*J AUCs;
F = MS_T / (MS_TR + J max(Cov2 - Cov3, 0)), ddf_H = (MS_TR + J max(Cov2 - Cov3, 0))^2 / (MS_TR^2 / ((T-1)(J-1))).
With T = 2 it equals the one-sample analysis of the per-reader differences (tested).

Fixed readers (FRRC, conclusions for these readers, random cases) and fixed cases (RRFC, random
readers, conclusions for these cases) follow Hillis (2007) / MRMCaov: FRRC uses only the error
terms, X2 = MS_T / (var_e - Cov1 + (J-1)(Cov2 - Cov3)) on T-1 df; RRFC uses only MS_TR, F on
(T-1, (T-1)(J-1)) df.

Validation: tests/reports/test_mrmc.py checks a 2-reader, 6-case example by hand, the published Van Dyke
outputs of MRMCaov (DeLong) and of the Iowa OR-DBM MRMC 2.51 program (jackknife) to their printed digits,
and agreement with an independent DBM jackknife-pseudovalue ANOVA and Monte-Carlo simulation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

METHOD = (
    "Obuchowski-Rockette analysis with DeLong covariances, random readers and random cases, "
    "the model as a fixed reader (its AUC's case-sampling variance and its covariance with the readers "
    "included); Hillis (2007) denominator degrees of freedom, Cov2 truncated at 0."
)
REFERENCE = (
    "Obuchowski & Rockette, Commun Stat Simul Comput 1995; Hillis, Stat Med 2007; "
    "Hillis, Berbaum & Metz, Acad Radiol 2008; Hillis, Obuchowski, Schartz & Berbaum, Stat Med 2005; "
    "DeLong et al., Biometrics 1988."
)


@dataclass
class ORResult:
    """One-sample OR analysis of J reader-level estimates (AUCs or AUC differences)."""

    n_readers: int
    estimate: float  # mean over readers
    se: float
    ddf: float  # Hillis denominator degrees of freedom (inf when MS_R = 0)
    t: float
    p_value: float
    ci_low: float
    ci_high: float
    ms_r: float  # reader mean square
    var_error: float  # mean of the diagonal of the case-sampling covariance (s2_e)
    cov2: float  # mean off-diagonal covariance (different readers, same cases)
    var_reader: float  # s2_R = MS_R - s2_e + Cov2 (may be negative: then ~0)
    null: float = 0.0
    alpha: float = 0.05
    p_one_sided: float = math.nan  # H0: mean <= null against mean > null (non-inferiority with null = -margin)

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def or_one_sample(estimates, cov, *, null: float = 0.0, alpha: float = 0.05) -> ORResult:
    """OR test of H0: mean_j theta_j = null with random readers and random cases.

    ``estimates`` (J,) reader-level figures of merit on the same cases, ``cov`` (J, J) their
    case-sampling covariance (DeLong or jackknife). Needs J >= 2.
    """
    est = np.asarray(estimates, dtype=np.float64).ravel()
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    J = est.size
    if J < 2:
        raise ValueError("the OR analysis needs at least two readers")
    if cov.shape != (J, J):
        raise ValueError("cov must be J x J")
    mean = float(est.mean())
    ms_r = float(est.var(ddof=1))
    var_e = float(np.mean(np.diag(cov)))
    off = cov[~np.eye(J, dtype=bool)]
    cov2 = float(off.mean())
    cov2_t = max(cov2, 0.0)
    numer = ms_r + J * cov2_t
    var_mean = numer / J
    se = math.sqrt(max(var_mean, 0.0))
    ddf = numer**2 / (ms_r**2 / (J - 1)) if ms_r > 0 else math.inf
    diff = mean - null
    if se > 0:
        t = diff / se
        p = float(2 * stats.t.sf(abs(t), ddf)) if math.isfinite(ddf) else float(2 * stats.norm.sf(abs(t)))
        q = float(stats.t.ppf(1 - alpha / 2, ddf)) if math.isfinite(ddf) else float(stats.norm.ppf(1 - alpha / 2))
    else:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
        q = 0.0
    if se > 0:
        p1 = float(stats.t.sf(t, ddf)) if math.isfinite(ddf) else float(stats.norm.sf(t))
    else:
        p1 = 0.0 if diff > 0 else 1.0
    return ORResult(
        n_readers=J,
        estimate=mean,
        se=se,
        ddf=float(ddf),
        t=float(t),
        p_value=p,
        p_one_sided=p1,
        ci_low=mean - q * se,
        ci_high=mean + q * se,
        ms_r=ms_r,
        var_error=var_e,
        cov2=cov2,
        var_reader=ms_r - var_e + cov2,
        null=null,
        alpha=alpha,
    )


def or_tests(aucs, cov, *, alpha: float = 0.05) -> dict:
    """The classical OR analysis of T tests (modalities) x J readers on the same cases, random readers
    and random cases (Obuchowski & Rockette 1995; Hillis 2007 ddf).

    ``aucs`` (T, J); ``cov`` (T*J, T*J) the DeLong covariance of the AUCs flattened test-major
    (index t*J + j). Error covariances averaged over pairs:
      Cov1 = same reader, different tests; Cov2 = different readers, same test;
      Cov3 = different readers, different tests; var_error = the mean variance.
    F = MS_T / (MS_TR + J max(Cov2 - Cov3, 0)) with ddf_H = (MS_TR + J max(Cov2 - Cov3, 0))^2 / (MS_TR^2 / ((T-1)(J-1))).
    For T = 2 also the difference of the test means (test 2 - test 1) with its CI:
    SE = sqrt(2 / J (MS_TR + J max(Cov2 - Cov3, 0))).
    """
    A = np.asarray(aucs, dtype=np.float64)
    T, J = A.shape
    S = np.asarray(cov, dtype=np.float64)
    if S.shape != (T * J, T * J):
        raise ValueError("cov must be (T*J, T*J), test-major")
    if T < 2 or J < 2:
        raise ValueError("needs at least two tests and two readers")
    t_idx = np.repeat(np.arange(T), J)
    r_idx = np.tile(np.arange(J), T)
    same_t = t_idx[:, None] == t_idx[None, :]
    same_r = r_idx[:, None] == r_idx[None, :]
    var_e = float(np.mean(np.diag(S)))
    cov1 = float(S[~same_t & same_r].mean())
    cov2 = float(S[same_t & ~same_r].mean())
    cov3 = float(S[~same_t & ~same_r].mean())
    grand = A.mean()
    tm, rm = A.mean(axis=1), A.mean(axis=0)
    ms_t = J * float(np.sum((tm - grand) ** 2)) / (T - 1)
    ms_r = T * float(np.sum((rm - grand) ** 2)) / (J - 1)
    ms_tr = float(np.sum((A - tm[:, None] - rm[None, :] + grand) ** 2)) / ((T - 1) * (J - 1))
    denom = ms_tr + J * max(cov2 - cov3, 0.0)
    F = ms_t / denom if denom > 0 else (0.0 if ms_t == 0 else math.inf)
    ddf = denom**2 / (ms_tr**2 / ((T - 1) * (J - 1))) if ms_tr > 0 else math.inf
    p = float(stats.f.sf(F, T - 1, ddf)) if math.isfinite(ddf) else float(stats.chi2.sf(F * (T - 1), T - 1))
    out = {
        "n_tests": T,
        "n_readers": J,
        "test_means": tm.tolist(),
        "F": float(F),
        "ndf": T - 1,
        "ddf": None if not math.isfinite(ddf) else float(ddf),
        "p_value": p,
        "ms_t": ms_t,
        "ms_r": ms_r,
        "ms_tr": ms_tr,
        "var_error": var_e,
        "cov1": cov1,
        "cov2": cov2,
        "cov3": cov3,
        # variance components from E[MS_R] = T s2_R + s2_e + (T-1) Cov1 - Cov2 - (T-1) Cov3 and
        # E[MS_TR] = s2_TR + s2_e - Cov1 - Cov2 + Cov3 (Hillis 2007); negative estimates happen by chance
        "var_test_reader": ms_tr - var_e + cov1 + cov2 - cov3,
        "alpha": alpha,
    }
    # E[MS_R] = T s2_R + s2_TR + s2_e + (T-1) Cov1 - Cov2 - (T-1) Cov3 (Hillis 2007; MRMCaov, Iowa OR-DBM)
    out["var_reader"] = (ms_r - var_e - (T - 1) * cov1 + cov2 + (T - 1) * cov3 - out["var_test_reader"]) / T
    # fixed readers, random cases: error terms only
    fr = var_e - cov1 + (J - 1) * (cov2 - cov3)
    x2 = (T - 1) * ms_t / fr if fr > 0 else (0.0 if ms_t == 0 else math.inf)
    out["frrc"] = {
        "generalises_to": "these readers, cases like these",
        "chi2": x2,
        "df": T - 1,
        "p_value": float(stats.chi2.sf(x2, T - 1)),
    }
    # random readers, fixed cases: reader-by-test interaction only
    f_rc = ms_t / ms_tr if ms_tr > 0 else (0.0 if ms_t == 0 else math.inf)
    out["rrfc"] = {
        "generalises_to": "readers like these, these cases",
        "F": f_rc,
        "ndf": T - 1,
        "ddf": (T - 1) * (J - 1),
        "p_value": float(stats.f.sf(f_rc, T - 1, (T - 1) * (J - 1))),
    }
    if T == 2:
        d = float(tm[1] - tm[0])
        se = math.sqrt(max(2.0 / J * denom, 0.0))
        q = float(stats.t.ppf(1 - alpha / 2, ddf)) if math.isfinite(ddf) else float(stats.norm.ppf(1 - alpha / 2))
        out.update({"difference": d, "se": se, "ci_low": d - q * se, "ci_high": d + q * se})
        for key, var, df in (("frrc", 2.0 / J * fr, math.inf), ("rrfc", 2.0 / J * ms_tr, float(J - 1))):
            s_ = math.sqrt(max(var, 0.0))
            qq = (
                float(stats.norm.ppf(1 - alpha / 2)) if not math.isfinite(df) else float(stats.t.ppf(1 - alpha / 2, df))
            )
            out[key].update({"difference": d, "se": s_, "ci_low": d - qq * s_, "ci_high": d + qq * s_})
    return out


def one_sided(estimate: float, se: float, ddf: float | None, margin: float, alpha: float = 0.05) -> dict:
    """Non-inferiority: H0 estimate <= -margin against estimate > -margin, one-sided at alpha.
    ``estimate`` is new - reference (e.g. model - readers, aided - unaided)."""
    df = ddf if ddf is not None and math.isfinite(ddf) else math.inf
    dist = stats.norm if not math.isfinite(df) else stats.t(df)
    q = float(dist.ppf(1 - alpha))
    lower = estimate - q * se
    if se > 0:
        p = float(dist.sf((estimate + margin) / se))
    else:
        p = 0.0 if estimate > -margin else 1.0
    return {
        "margin": margin,
        "estimate": estimate,
        "lower_bound": lower,
        "p_value": p,
        "alpha": alpha,
        "non_inferior": bool(lower > -margin),
    }


def random_readers_fixed_cases(estimates, *, alpha: float = 0.05) -> dict:
    """Readers random, cases fixed: one-sample t test of the reader-level estimates (df J-1)."""
    est = np.asarray(estimates, dtype=np.float64).ravel()
    J = est.size
    mean = float(est.mean())
    se = math.sqrt(float(est.var(ddof=1)) / J) if J > 1 else math.nan
    if not se > 0:
        return {
            "generalises_to": "readers like these, these cases",
            "estimate": mean,
            "se": se,
            "df": J - 1,
            "p_value": None,
            "ci_low": None,
            "ci_high": None,
        }
    t = mean / se
    q = float(stats.t.ppf(1 - alpha / 2, J - 1))
    return {
        "generalises_to": "readers like these, these cases",
        "estimate": mean,
        "se": se,
        "df": J - 1,
        "t": t,
        "p_value": float(2 * stats.t.sf(abs(t), J - 1)),
        "ci_low": mean - q * se,
        "ci_high": mean + q * se,
    }


def fixed_reader_test(estimates, cov, *, alpha: float = 0.05) -> dict:
    """Readers treated as fixed, cases random (FRRC; conclusions for these readers only): normal test
    of the mean with Var(mean) = 1^T S 1 / J^2 (case sampling only)."""
    est = np.asarray(estimates, dtype=np.float64).ravel()
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    J = est.size
    var = float(np.ones(J) @ cov @ np.ones(J)) / J**2
    se = math.sqrt(max(var, 0.0))
    mean = float(est.mean())
    z = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    q = float(stats.norm.ppf(1 - alpha / 2))
    return {
        "generalises_to": "these readers, cases like these",
        "estimate": mean,
        "se": se,
        "z": float(z),
        "p_value": float(2 * stats.norm.sf(abs(z))),
        "ci_low": mean - q * se,
        "ci_high": mean + q * se,
    }
