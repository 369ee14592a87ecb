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

Validation: tests/reports/test_mrmc.py checks a 2-reader, 6-case example by hand, and agreement with
an independent implementation (a DBM jackknife-pseudovalue ANOVA written from the DBM formulas,
plus a two-way bootstrap over readers and cases).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from inference.ml.metrics import delong_covariance

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
    estimate: float        # mean over readers
    se: float
    ddf: float             # Hillis denominator degrees of freedom (inf when MS_R = 0)
    t: float
    p_value: float
    ci_low: float
    ci_high: float
    ms_r: float            # reader mean square
    var_error: float       # mean of the diagonal of the case-sampling covariance (s2_e)
    cov2: float            # mean off-diagonal covariance (different readers, same cases)
    var_reader: float      # s2_R = MS_R - s2_e + Cov2 (may be negative: then ~0)
    null: float = 0.0
    alpha: float = 0.05

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
    ddf = numer ** 2 / (ms_r ** 2 / (J - 1)) if ms_r > 0 else math.inf
    diff = mean - null
    if se > 0:
        t = diff / se
        p = float(2 * stats.t.sf(abs(t), ddf)) if math.isfinite(ddf) else float(2 * stats.norm.sf(abs(t)))
        q = float(stats.t.ppf(1 - alpha / 2, ddf)) if math.isfinite(ddf) else float(stats.norm.ppf(1 - alpha / 2))
    else:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
        q = 0.0
    return ORResult(
        n_readers=J, estimate=mean, se=se, ddf=float(ddf), t=float(t), p_value=p,
        ci_low=mean - q * se, ci_high=mean + q * se, ms_r=ms_r, var_error=var_e, cov2=cov2,
        var_reader=ms_r - var_e + cov2, null=null, alpha=alpha,
    )


def fixed_reader_test(estimates, cov, *, alpha: float = 0.05) -> dict:
    """Readers treated as fixed (conclusions for these readers only): normal test of the mean
    with Var(mean) = 1^T S 1 / J^2 (case sampling only)."""
    est = np.asarray(estimates, dtype=np.float64).ravel()
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    J = est.size
    var = float(np.ones(J) @ cov @ np.ones(J)) / J ** 2
    se = math.sqrt(max(var, 0.0))
    mean = float(est.mean())
    z = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    q = float(stats.norm.ppf(1 - alpha / 2))
    return {"estimate": mean, "se": se, "z": float(z), "p_value": float(2 * stats.norm.sf(abs(z))),
            "ci_low": mean - q * se, "ci_high": mean + q * se}


def readers_vs_model(y, reader_scores, model_score, *, alpha: float = 0.05) -> dict:
    """Readers' mean AUC vs the model's AUC on the same cases (see the module docstring).

    ``y`` (N,) 0/1 truth, ``reader_scores`` (J, N) ratings (higher = more positive; a yes/no answer
    is a 2-point rating), ``model_score`` (N,). One DeLong covariance matrix for all J+1 scores.
    """
    R = np.atleast_2d(np.asarray(reader_scores, dtype=np.float64))
    m = np.asarray(model_score, dtype=np.float64).ravel()
    J = R.shape[0]
    aucs, S = delong_covariance(y, np.vstack([R, m[None, :]]))
    reader_aucs, model_auc = aucs[:J], float(aucs[J])
    K = np.hstack([np.eye(J), -np.ones((J, 1))])
    d = K @ aucs
    S_d = K @ S @ K.T
    q = float(stats.norm.ppf(1 - alpha / 2))
    model_se = math.sqrt(max(float(S[J, J]), 0.0))
    out = {
        "n_readers": J,
        "n_cases": int(R.shape[1]),
        "n_positive": int(np.sum(np.asarray(y) == 1)),
        "reader_aucs": reader_aucs.tolist(),
        "reader_mean_auc": float(reader_aucs.mean()),
        "model_auc": model_auc,
        "model_auc_ci": [max(0.0, model_auc - q * model_se), min(1.0, model_auc + q * model_se)],
        "cov_reader_model_mean": float(S[:J, J].mean()),
        "method": METHOD,
        "reference": REFERENCE,
        "alpha": alpha,
    }
    if J >= 2:
        diff = or_one_sample(d, S_d, alpha=alpha)
        mean_auc = or_one_sample(reader_aucs, S[:J, :J], alpha=alpha)
        out.update({
            "analysis": "OR random readers, random cases (model as fixed reader)",
            "difference": diff.as_dict(),
            "reader_mean": mean_auc.as_dict(),   # CI of the readers' mean AUC (single test)
            "fixed_readers": fixed_reader_test(d, S_d, alpha=alpha),
        })
    else:
        var = float(S_d[0, 0])
        se = math.sqrt(max(var, 0.0))
        dd = float(d[0])
        z = dd / se if se > 0 else (0.0 if dd == 0 else math.copysign(math.inf, dd))
        out.update({
            "analysis": "one reader: paired DeLong test (fixed reader, random cases)",
            "difference": {"n_readers": 1, "estimate": dd, "se": se, "ddf": None, "t": float(z),
                           "p_value": float(2 * stats.norm.sf(abs(z))), "ci_low": dd - q * se, "ci_high": dd + q * se,
                           "ms_r": None, "var_error": var, "cov2": None, "var_reader": None, "null": 0.0, "alpha": alpha},
            "reader_mean": None,
            "fixed_readers": None,
        })
    # an AUC lives in [0, 1] and a difference of AUCs in [-1, 1]: report the intervals clipped
    # (with very few readers the t interval can be wider than that); the unclipped values stay in ci_low/ci_high
    if out.get("reader_mean"):
        out["reader_mean"]["ci_clipped"] = [max(0.0, out["reader_mean"]["ci_low"]), min(1.0, out["reader_mean"]["ci_high"])]
    out["estimate"] = out["difference"]["estimate"]
    out["p_value"] = out["difference"]["p_value"]
    out["ci"] = [max(-1.0, out["difference"]["ci_low"]), min(1.0, out["difference"]["ci_high"])]
    return out
