"""A fair comparison of yes/no readers with a continuous model.

A yes/no reader is one operating point; the two-point AUC (Se + Sp)/2 set against the model's full
ROC AUC favours the model. Here the model is read off its ROC at the readers' operating point:

- the model's sensitivity at the readers' mean specificity (the highest sensitivity among thresholds
  whose specificity is at least that), and its specificity at the readers' mean sensitivity;
- 95% intervals of these and of the differences from the readers' mean by a case bootstrap,
  stratified (positives and negatives resampled separately), recomputing the readers' mean and the
  matched threshold in every resample (readers fixed: the interval is about case sampling);
- an OR multi-reader analysis (jackknife covariances, random readers and cases) of the readers'
  sensitivity against the model's at the matched threshold (held fixed), and likewise specificity.
"""

from __future__ import annotations

import numpy as np

from .compare import readers_vs_model

N_BOOT = 1000


def _weights(rng, k: int, n_boot: int) -> np.ndarray:
    """Row 0 all ones (the data), then n_boot rows of resampling counts of k cases."""
    idx = rng.integers(0, k, size=(n_boot, k)) + (np.arange(n_boot) * k)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n_boot * k).reshape(n_boot, k)
    return np.vstack([np.ones((1, k)), counts]).astype(float)


def _rates(W, C, R):
    """Per-reader rates in each resample: W (B, n) case weights, C/R (J, n) correct/read."""
    # integer products: small, exact, and no BLAS thread start-up on a busy server
    Wi, Ci, Ri = W.astype(np.int64), C.astype(np.int64), R.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (Wi @ Ci.T) / (Wi @ Ri.T)


def _se_at_sp(pos, neg_sorted, Wp, Wn, target):
    """Model sensitivity at specificity >= target in each resample (weights Wp (B, m), Wn (B, n) in
    neg_sorted order). Positive call: score > v, v the smallest negative leaving >= target below."""
    n, m = neg_sorted.size, pos.size
    cum = np.cumsum(Wn, axis=1) / n
    idx = np.minimum((cum < target[:, None] - 1e-12).sum(axis=1), n - 1)
    v = neg_sorted[idx]
    se = (Wp * (pos[None, :] > v[:, None])).sum(axis=1) / m
    return np.where(target <= 0, 1.0, se), v


def _sp_at_se(neg, pos_desc, Wn, Wp, target):
    m, n = pos_desc.size, neg.size
    cum = np.cumsum(Wp, axis=1) / m
    idx = np.minimum((cum < target[:, None] - 1e-12).sum(axis=1), m - 1)
    v = pos_desc[idx]
    sp = (Wn * (neg[None, :] < v[:, None])).sum(axis=1) / n
    return np.where(target <= 0, 1.0, sp), v


def fair_comparison(
    y, decisions, read, model_score, *, alpha: float = 0.05, n_boot: int = N_BOOT, seed: int = 0
) -> dict:
    """``decisions`` (J, N) 1 = called positive, ``read`` (J, N) bool, ``model_score`` (N,)."""
    y = np.asarray(y).astype(int)
    D = np.asarray(decisions, dtype=float)
    R = np.asarray(read, dtype=bool)
    s = np.asarray(model_score, dtype=float)
    pi, ni = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = pi.size, ni.size
    pos, neg = s[pi], s[ni]
    n_order = np.argsort(neg, kind="mergesort")
    p_order = np.argsort(-pos, kind="mergesort")
    Cp, Rp = ((D[:, pi] == 1) & R[:, pi]).astype(float), R[:, pi].astype(float)
    Cn, Rn = ((D[:, ni] == 0) & R[:, ni]).astype(float), R[:, ni].astype(float)
    rng = np.random.default_rng(seed)
    Wp, Wn = _weights(rng, m, n_boot), _weights(rng, n, n_boot)
    rse = np.nanmean(_rates(Wp, Cp, Rp), axis=1)  # readers' mean sensitivity (B+1,)
    rsp = np.nanmean(_rates(Wn, Cn, Rn), axis=1)
    mse, v_sp = _se_at_sp(pos, neg[n_order], Wp, Wn[:, n_order], rsp)
    msp, v_se = _sp_at_se(neg, pos[p_order], Wn, Wp[:, p_order], rse)
    lo_q, hi_q = alpha / 2, 1 - alpha / 2

    def summary(point, boot):
        lo, hi = np.nanquantile(boot, [lo_q, hi_q])
        return {"estimate": float(point), "ci_low": float(lo), "ci_high": float(hi)}

    out = {
        "readers_sensitivity": summary(rse[0], rse[1:]),
        "readers_specificity": summary(rsp[0], rsp[1:]),
        "model_sensitivity_at_readers_specificity": summary(mse[0], mse[1:]),
        "model_specificity_at_readers_sensitivity": summary(msp[0], msp[1:]),
        "sensitivity_difference": summary(mse[0] - rse[0], mse[1:] - rse[1:]),  # model - readers
        "specificity_difference": summary(msp[0] - rsp[0], msp[1:] - rsp[1:]),
        "threshold_for_specificity": float(v_sp[0]),
        "threshold_for_sensitivity": float(v_se[0]),
        "n_boot": n_boot,
        "method": (
            f"case bootstrap ({n_boot} resamples, positives and negatives resampled separately; the readers' "
            "mean and the model's matched threshold recomputed in each); readers fixed"
        ),
    }
    # OR analyses of sensitivity and specificity, the model at the matched threshold held fixed
    model_pos_sp = (s > v_sp[0]).astype(float)  # matches the readers' specificity
    model_pos_se = (s >= v_se[0]).astype(float)  # matches the readers' sensitivity
    J = D.shape[0]
    if J >= 1:
        for key, fom, dec in (
            ("sensitivity_mrmc", "sensitivity", model_pos_sp),
            ("specificity_mrmc", "specificity", model_pos_se),
        ):
            try:
                out[key] = readers_vs_model(
                    y, D, s, read=R, method="jackknife", fom=fom, model_decision=dec, alpha=alpha
                )
            except ValueError as exc:  # too few cases of a class read by a reader
                out[key] = {"error": str(exc)}
    return out
