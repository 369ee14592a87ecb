"""Probability calibration: temperature scaling (Guo et al. 2017) and the expected calibration error.

The fused (product) differential's log-probabilities ``log p`` are divided by one temperature T
fitted on the model's held-out cases (minimum negative log-likelihood): ``q = softmax(log p / T)``.
T > 1 softens an over-confident model, T < 1 sharpens an under-confident one; the ranking of one
photo's diagnoses never changes.

Public API (numpy only):
- ``log_probs(p)``: log of probabilities, floored at 1e-12 (a fused probability can underflow to 0);
- ``fit_temperature(logp, y) -> float`` and ``apply_temperature(logp, T) -> probabilities``;
- ``nll(logp, y, T)``;
- ``ece(prob, y, bins=15)``: top-1 expected calibration error over equal-width confidence bins
  (each bin (lo, hi], weighted by its share of photos);
- ``reliability(prob, y, bins=15)``: the bins behind it as dicts
  {lower, upper, count, confidence (mean top-1 probability), accuracy (share whose top-1 is right)}.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
FLOOR = 1e-12
T_RANGE = (0.05, 20.0)  # a temperature outside this says the inputs are not log-probabilities


def log_probs(p) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), FLOOR, None))


def apply_temperature(logp, T: float) -> np.ndarray:
    """softmax(logp / T) row-wise (shape (C,) or (N, C))."""
    z = np.asarray(logp, dtype=np.float64) / float(T)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logp, y, T: float) -> float:
    z = np.asarray(logp, dtype=np.float64) / float(T)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    y = np.asarray(y, dtype=int)
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(logp, y) -> float:
    """The T that minimises the mean negative log-likelihood of ``y`` under softmax(logp / T)."""
    from scipy.optimize import minimize_scalar

    logp = np.asarray(logp, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if logp.ndim != 2 or len(logp) != len(y):
        raise ValueError(f"log-probabilities {logp.shape} and {len(y)} labels do not match")
    if len(y) == 0:
        raise ValueError("no held-out photos to fit a temperature on")
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    r = minimize_scalar(lambda t: nll(logp, y, np.exp(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(r.x))


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    return np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)


def reliability(prob, y, bins: int = ECE_BINS) -> list[dict]:
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    conf, pred = prob.max(axis=1), prob.argmax(axis=1)
    idx = _bin_index(conf, bins)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": n,
                "confidence": float(conf[m].mean()) if n else None,
                "accuracy": float((pred[m] == y[m]).mean()) if n else None,
            }
        )
    return out


def ece(prob, y, bins: int = ECE_BINS) -> float:
    rows = reliability(prob, y, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return 0.0
    return float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows if r["count"]) / n)
