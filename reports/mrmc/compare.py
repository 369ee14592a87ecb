"""The study's comparisons: reading conditions (unaided vs AI-aided) and readers vs the model, by
OR with DeLong or jackknife covariances, with the fixed-reader and fixed-case versions beside the
random-reader random-case analysis. Derivations in reports.mrmc.core."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from inference.ml.metrics import logit_ci

from .core import (
    METHOD,
    REFERENCE,
    fixed_reader_test,
    one_sided,
    or_one_sample,
    or_tests,
    random_readers_fixed_cases,
)
from .covariance import covariance

FOM_LABEL = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}
COVARIANCE_LABEL = {"delong": "DeLong covariances", "jackknife": "jackknife covariances"}


def tests_compared(
    y,
    scores_by_test,
    *,
    read=None,
    method: str = "delong",
    fom: str = "auc",
    margin: float | None = None,
    alpha: float = 0.05,
) -> dict:
    """OR comparison of T reading conditions for the same J readers on the same cases.

    ``scores_by_test`` (T, J, N); ``read`` (T, J, N) bool or None (every case read). One covariance
    matrix (DeLong or jackknife) for all T*J rating vectors, flattened test-major."""
    R = np.asarray(scores_by_test, dtype=np.float64)
    T, J, N = R.shape
    mask = None if read is None else np.asarray(read, dtype=bool).reshape(T * J, N)
    est, S = covariance(y, R.reshape(T * J, N), mask, method, fom)
    out = or_tests(est.reshape(T, J), S, alpha=alpha)
    out["reader_aucs"] = est.reshape(T, J).tolist()
    out["fom"] = fom
    out["covariance"] = method
    out["method"] = (
        f"Obuchowski-Rockette two-test analysis of the {FOM_LABEL[fom]} with {COVARIANCE_LABEL[method]} "
        "(Cov1, Cov2, Cov3), random readers and cases, Hillis (2007) ddf"
    )
    if margin is not None and T == 2:
        ddf = out["ddf"]
        out["non_inferiority"] = one_sided(out["difference"], out["se"], ddf, margin, alpha)
    return out


def readers_vs_model(
    y,
    reader_scores,
    model_score,
    *,
    read=None,
    method: str = "delong",
    fom: str = "auc",
    model_decision=None,
    margin: float | None = None,
    alpha: float = 0.05,
) -> dict:
    """Readers' mean figure of merit vs the model's on the same cases (see reports.mrmc.core).

    ``y`` (N,) 0/1 truth, ``reader_scores`` (J, N) ratings (higher = more positive; a yes/no answer
    is a 2-point rating), ``model_score`` (N,); ``read`` (J, N) bool when readers skipped cases
    (jackknife only). For "sensitivity" / "specificity" the scores are 0/1 decisions and
    ``model_decision`` is the model's 0/1 decision at a fixed threshold."""
    R = np.atleast_2d(np.asarray(reader_scores, dtype=np.float64))
    m = np.asarray(model_decision if fom != "auc" else model_score, dtype=np.float64).ravel()
    J, N = R.shape
    mask = None
    if read is not None:
        mask = np.vstack([np.asarray(read, dtype=bool), np.ones((1, N), dtype=bool)])
    est, S = covariance(y, np.vstack([R, m[None, :]]), mask, method, fom)
    reader_est, model_est = est[:J], float(est[J])
    K = np.hstack([np.eye(J), -np.ones((J, 1))])
    d = K @ est
    S_d = K @ S @ K.T
    q = float(stats.norm.ppf(1 - alpha / 2))
    model_se = math.sqrt(max(float(S[J, J]), 0.0))
    out = {
        "fom": fom,
        "covariance": method,
        "n_readers": J,
        "n_cases": int(N),
        "n_positive": int(np.sum(np.asarray(y) == 1)),
        "reader_aucs": reader_est.tolist(),
        "reader_mean_auc": float(reader_est.mean()),
        "model_auc": model_est,
        "model_se": model_se,
        "model_auc_ci": list(logit_ci(model_est, model_se, alpha)),
        "model_auc_ci_wald": [max(0.0, model_est - q * model_se), min(1.0, model_est + q * model_se)],
        "cov_reader_model_mean": float(S[:J, J].mean()),
        "method": METHOD if method == "delong" else METHOD.replace("DeLong covariances", "jackknife covariances"),
        "reference": REFERENCE,
        "alpha": alpha,
    }
    if J >= 2:
        diff = or_one_sample(d, S_d, alpha=alpha)
        mean_auc = or_one_sample(reader_est, S[:J, :J], alpha=alpha)
        out.update(
            {
                "analysis": "OR random readers, random cases (model as fixed reader)",
                "difference": diff.as_dict(),
                "reader_mean": mean_auc.as_dict(),  # CI of the readers' mean (single test)
                "fixed_readers": fixed_reader_test(d, S_d, alpha=alpha),
                "fixed_cases": random_readers_fixed_cases(d, alpha=alpha),
            }
        )
    else:
        var = float(S_d[0, 0])
        se = math.sqrt(max(var, 0.0))
        dd = float(d[0])
        z = dd / se if se > 0 else (0.0 if dd == 0 else math.copysign(math.inf, dd))
        out.update(
            {
                "analysis": "one reader: paired test (fixed reader, random cases)",
                "difference": {
                    "n_readers": 1,
                    "estimate": dd,
                    "se": se,
                    "ddf": None,
                    "t": float(z),
                    "p_value": float(2 * stats.norm.sf(abs(z))),
                    "ci_low": dd - q * se,
                    "ci_high": dd + q * se,
                    "ms_r": None,
                    "var_error": var,
                    "cov2": None,
                    "var_reader": None,
                    "null": 0.0,
                    "alpha": alpha,
                },
                "reader_mean": None,
                "fixed_readers": None,
                "fixed_cases": None,
            }
        )
    if out.get("reader_mean"):
        rm = out["reader_mean"]
        # the t interval of a mean AUC near 1 can cross 1: logit scale (delta method, same t quantile)
        rm["ci_clipped"] = [max(0.0, rm["ci_low"]), min(1.0, rm["ci_high"])]
        rm["ci_logit"] = _logit_t(rm["estimate"], rm["se"], rm["ddf"], alpha)
    out["estimate"] = out["difference"]["estimate"]
    out["p_value"] = out["difference"]["p_value"]
    out["ci"] = [max(-1.0, out["difference"]["ci_low"]), min(1.0, out["difference"]["ci_high"])]
    if margin is not None:
        dd = out["difference"]
        # model - readers = -D: non-inferiority of the model to the readers' mean
        out["non_inferiority"] = one_sided(-dd["estimate"], dd["se"], dd["ddf"], margin, alpha)
    return out


def _logit_t(est: float, se: float, ddf, alpha: float) -> list[float]:
    if not 0 < est < 1 or not se or se <= 0:
        return [max(0.0, est - 1.96 * (se or 0)), min(1.0, est + 1.96 * (se or 0))]
    q = float(stats.t.ppf(1 - alpha / 2, ddf)) if ddf and math.isfinite(ddf) else float(stats.norm.ppf(1 - alpha / 2))
    lg, half = math.log(est / (1 - est)), q * se / (est * (1 - est))
    return [1 / (1 + math.exp(-(lg - half))), 1 / (1 + math.exp(-(lg + half)))]
