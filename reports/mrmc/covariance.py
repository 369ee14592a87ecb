"""Case-sampling covariances of reader figures of merit: DeLong (AUC, every reader read every case)
and the jackknife over cases (any figure of merit, readers may have skipped cases).

Jackknife (Iowa OR-DBM MRMC; Hillis, Obuchowski, Schartz & Berbaum 2005): with theta_j(-k) the
figure of merit of reader j without case k,  Cov_ij = (N-1)/N sum_k (theta_i(-k) - mean_i)(theta_j(-k) - mean_j).
Leave-one-out values are closed forms, no refitting: for the Mann-Whitney AUC of a reader with m
positives and n negatives, dropping positive i gives (m A - V10_i)/(m-1) and dropping negative k
gives (n A - V01_k)/(n-1) (V10, V01 the DeLong structural components); for a sensitivity (a mean
over positives) dropping positive i gives (m Se - hit_i)/(m-1) and dropping a negative changes nothing.

Missing readings: each reader's figure of merit uses the cases that reader read; deleting a case the
reader skipped leaves that reader's estimate unchanged (theta_j(-k) = theta_j). With complete
readings this is the ordinary jackknife (tests reproduce the Iowa program's Van Dyke output).
"""

from __future__ import annotations

import numpy as np

from inference.ml.metrics import delong_covariance

FOMS = ("auc", "sensitivity", "specificity")


def _mask(read, shape) -> np.ndarray:
    if read is None:
        return np.ones(shape, dtype=bool)
    read = np.asarray(read, dtype=bool)
    if read.shape != shape:
        raise ValueError(f"read mask must have shape {shape}, got {read.shape}")
    return read


def loo_auc(y: np.ndarray, s: np.ndarray, read: np.ndarray) -> tuple[float, np.ndarray]:
    """AUC of one reader on the cases read, and its leave-one-case-out values for all N cases."""
    pos_i = np.flatnonzero(read & (y == 1))
    neg_i = np.flatnonzero(read & (y == 0))
    m, n = pos_i.size, neg_i.size
    if m < 2 or n < 2:
        raise ValueError("a reader's AUC jackknife needs at least two positive and two negative cases read")
    x, z = s[pos_i], s[neg_i]
    zs, xs = np.sort(z), np.sort(x)
    v10 = (np.searchsorted(zs, x, "left") + np.searchsorted(zs, x, "right")) / (2.0 * n)
    v01 = 1.0 - (np.searchsorted(xs, z, "left") + np.searchsorted(xs, z, "right")) / (2.0 * m)
    a = float(v10.mean())
    out = np.full(y.size, a)
    out[pos_i] = (m * a - v10) / (m - 1)
    out[neg_i] = (n * a - v01) / (n - 1)
    return a, out


def loo_rate(y: np.ndarray, hit: np.ndarray, read: np.ndarray, cls: int) -> tuple[float, np.ndarray]:
    """Share of the read cases of class ``cls`` (1: sensitivity, 0: specificity) with hit = 1."""
    idx = np.flatnonzero(read & (y == cls))
    m = idx.size
    if m < 2:
        raise ValueError("a rate's jackknife needs at least two cases of the class read")
    h = hit[idx].astype(float)
    a = float(h.mean())
    out = np.full(y.size, a)
    out[idx] = (m * a - h) / (m - 1)
    return a, out


def jackknife(y, scores, read=None, fom: str = "auc"):
    """``(estimates (k,), cov (k, k))`` by the case jackknife. ``scores`` (k, N): ratings for "auc",
    0/1 decisions (1 = called positive) for "sensitivity" / "specificity"; ``read`` (k, N) bool."""
    if fom not in FOMS:
        raise ValueError(f"unknown figure of merit {fom!r}; one of {', '.join(FOMS)}")
    y = np.asarray(y).astype(int).ravel()
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    k, N = S.shape
    R = _mask(read, (k, N))
    est = np.empty(k)
    loo = np.empty((k, N))
    for j in range(k):
        if fom == "auc":
            est[j], loo[j] = loo_auc(y, S[j], R[j])
        elif fom == "sensitivity":
            est[j], loo[j] = loo_rate(y, S[j] >= 0.5, R[j], 1)
        else:
            est[j], loo[j] = loo_rate(y, S[j] < 0.5, R[j], 0)
    d = loo - loo.mean(axis=1, keepdims=True)
    return est, (N - 1) / N * (d @ d.T)


def covariance(y, scores, read=None, method: str = "delong", fom: str = "auc"):
    """Figures of merit and their case-sampling covariance by ``method`` "delong" or "jackknife"."""
    if method == "delong":
        if fom != "auc":
            raise ValueError("DeLong covariances are for the AUC; use the jackknife for other figures of merit")
        if read is not None and not np.asarray(read, dtype=bool).all():
            raise ValueError("DeLong covariances need every reader to have read every case; use the jackknife")
        return delong_covariance(y, scores)
    if method == "jackknife":
        return jackknife(y, scores, read, fom)
    raise ValueError(f"unknown covariance method {method!r} (delong or jackknife)")
