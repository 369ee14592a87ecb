"""ROC / AUC / DeLong statistics and classification metrics (pure numpy + sklearn).

Public API (stable; the reader-study module imports these):

- ``roc_curve(y, score) -> (fpr, tpr, thresholds)``
- ``auc(y, score) -> float``                      (Mann-Whitney AUC, ties count 1/2)
- ``delong_covariance(y, scores) -> (aucs[k], cov[k, k])``
  fast DeLong for k scores on the same cases (Sun & Xu 2014, midranks, O(k n log n))
- ``delong_auc_variance(y, score) -> (auc, variance)``
- ``delong_ci(y, score, alpha=0.05) -> (auc, lo, hi)``
- ``delong_test(y, score_a, score_b) -> dict(auc_a, auc_b, diff, z, p_value, ...)`` paired test
- ``delong_slow(y, score) -> (auc, variance)``  O(m n) definition via structural components
- ``youden(y, score) -> dict(threshold, sensitivity, specificity, j)``
- ``logit_ci(estimate, se, alpha)`` an interval for a proportion-like quantity built on the logit scale
- ``classification_report_dict(y_true, prob, class_names)`` multi-class summary used by
  ``inference.ml.evaluate``.

``y`` is binary (1 = positive / diseased, 0 = negative); a higher score means "more positive".

Edge inputs (documented answers, tested in tests/ml/test_metrics.py):

- labels must be 0/1 (bool or integral numbers): 0.6, 2, NaN or strings raise ValueError naming the
  first bad position; nothing is truncated.
- a NaN score raises ValueError naming its position (NaN cannot be ranked); +-inf rank normally.
- one positive or one negative case: the AUC is defined, but its DeLong variance is not (the
  structural components of the single case have no sample variance). ``delong_covariance`` returns
  NaN for the inestimable covariance, and ``delong_ci`` / ``delong_test`` raise ValueError saying so.
- Youden when no threshold beats chance (max TPR - FPR <= 0): the "call nothing positive" point,
  sensitivity 0, specificity 1, with a threshold just above the highest score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

_N = NormalDist()


def rankdata(x) -> np.ndarray:
    """1-based midranks (ties get the mean of their ranks), O(n log n)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    b = np.flatnonzero(np.diff(xs)) + 1
    starts, ends = np.r_[0, b], np.r_[b, n]
    out = np.empty(n)
    out[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return out


__all__ = [
    "auc",
    "classification_report_dict",
    "delong_auc_variance",
    "delong_ci",
    "delong_covariance",
    "delong_slow",
    "delong_test",
    "logit_ci",
    "one_vs_rest_auc",
    "roc_curve",
    "youden",
]


def _labels(y) -> np.ndarray:
    """0/1 labels as int; anything else (0.6, 2, NaN, text) is an error, never truncated."""
    a = np.asarray(y).ravel()
    if a.dtype == bool:
        return a.astype(int)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"labels must be numbers 0 or 1, got values of type {a.dtype}")
    bad = np.flatnonzero(~np.isin(a, (0, 1)))
    if bad.size:
        raise ValueError(
            f"labels must be 0 or 1: position {int(bad[0])} is {a[bad[0]]!r}"
            + (f" ({bad.size} bad labels)" if bad.size > 1 else "")
        )
    return a.astype(int)


def _scores(s, n: int) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64).ravel()
    if s.shape != (n,):
        raise ValueError("score and y must have the same length")
    nan = np.flatnonzero(np.isnan(s))
    if nan.size:
        raise ValueError(f"score is NaN at position {int(nan[0])} ({nan.size} NaN in all): NaN scores cannot be ranked")
    return s


def _check_binary(y, *scores):
    y = _labels(y)
    m = int(y.sum())
    n = int(len(y) - m)
    if m == 0 or n == 0:
        raise ValueError("AUC needs at least one positive and one negative case")
    return y, [_scores(s, y.size) for s in scores], m, n


def roc_curve(y, score):
    """Return ``(fpr, tpr, thresholds)``: the same as sklearn's with drop_intermediate=False (a first
    point (0, 0) at threshold +inf, then one point per distinct score, highest first), in numpy
    without sklearn's per-call overhead (the reader-study page draws dozens of curves)."""
    y, (s,), m, n = _check_binary(y, score)
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]  # last index of each run of equal scores
    tps = np.cumsum(yy)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / n], np.r_[0.0, tps / m], np.r_[np.inf, ss[last]]


def delong_covariance(y, scores: Sequence | np.ndarray):
    """Fast DeLong (Sun & Xu 2014). ``scores`` is one score vector or a (k, N) array.

    Returns ``(aucs, cov)`` with ``aucs`` of shape (k,) and ``cov`` (k, k). With a single positive or
    a single negative case the covariance is not estimable and is NaN (the AUCs are still exact).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y, _, m, n = _check_binary(y, *scores)
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    k = scores.shape[0]
    tx = np.vstack([rankdata(pos[r]) for r in range(k)])  # midranks within positives
    ty = np.vstack([rankdata(neg[r]) for r in range(k)])  # midranks within negatives
    tz = np.vstack([rankdata(np.concatenate([pos[r], neg[r]])) for r in range(k)])
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1.0) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # structural components of positives
    v01 = 1.0 - (tz[:, m:] - ty) / m  # structural components of negatives
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    cov = s10 / m + s01 / n
    return aucs, cov


def delong_auc_variance(y, score):
    """Return ``(auc, variance)`` by fast DeLong."""
    aucs, cov = delong_covariance(y, score)
    return float(aucs[0]), float(cov[0, 0])


def auc(y, score) -> float:
    """Area under the ROC curve (Mann-Whitney, ties 1/2)."""
    return delong_auc_variance(y, score)[0]


def _need_two_each(v, what: str) -> None:
    if not math.isfinite(v):
        raise ValueError(f"{what} needs at least two positive and two negative cases (DeLong variance undefined)")


def logit_ci(estimate: float, se: float, alpha: float = 0.05) -> tuple[float, float]:
    """(1-alpha) interval for a quantity in [0, 1] built on the logit scale (delta method), so it
    stays inside (0, 1) near the bounds. An estimate of exactly 0 or 1 gives the Wald interval
    clipped to [0, 1] (its logit is infinite)."""
    z = _N.inv_cdf(1 - alpha / 2)
    if not 0 < estimate < 1 or se <= 0:
        return max(0.0, estimate - z * se), min(1.0, estimate + z * se)
    lg = math.log(estimate / (1 - estimate))
    half = z * se / (estimate * (1 - estimate))
    return 1 / (1 + math.exp(-(lg - half))), 1 / (1 + math.exp(-(lg + half)))


def delong_ci(y, score, alpha: float = 0.05, scale: str = "wald"):
    """Return ``(auc, lo, hi)``: the (1-alpha) DeLong confidence interval. ``scale="wald"`` is the
    plain interval clipped to [0, 1]; ``scale="logit"`` builds it on the logit scale (inside (0, 1)
    near AUC = 1). ValueError with fewer than two positives or negatives."""
    a, v = delong_auc_variance(y, score)
    _need_two_each(v, "a DeLong confidence interval")
    se = math.sqrt(max(v, 0.0))
    if scale == "logit":
        return (a, *logit_ci(a, se, alpha))
    z = _N.inv_cdf(1 - alpha / 2)
    return a, max(0.0, a - z * se), min(1.0, a + z * se)


def delong_test(y, score_a, score_b) -> dict:
    """Paired DeLong test of AUC(score_a) == AUC(score_b) on the same cases (two-sided)."""
    aucs, cov = delong_covariance(y, np.vstack([np.ravel(score_a), np.ravel(score_b)]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    _need_two_each(var, "the DeLong test")
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = float(math.erfc(abs(z) / math.sqrt(2))) if math.isfinite(z) else 0.0
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "var_diff": float(var),
        "z": float(z),
        "p_value": p,
        "cov": cov.tolist(),
    }


def delong_slow(y, score):
    """O(m n) DeLong by the definition (psi kernel, structural components). For tests.
    NaN variance with a single positive or negative (as ``delong_covariance``)."""
    y, (s,), m, n = _check_binary(y, score)
    x = s[y == 1][:, None]
    z = s[y == 0][None, :]
    psi = (x > z).astype(float) + 0.5 * (x == z)
    v10 = psi.mean(axis=1)  # per positive
    v01 = psi.mean(axis=0)  # per negative
    a = float(psi.mean())
    if m < 2 or n < 2:
        return a, math.nan
    s10 = float(np.sum((v10 - a) ** 2) / (m - 1))
    s01 = float(np.sum((v01 - a) ** 2) / (n - 1))
    return a, s10 / m + s01 / n


def youden(y, score) -> dict:
    """Youden point: threshold maximising TPR - FPR. A case is positive when score >= threshold.

    When no threshold beats chance the answer is the first ROC point (nothing called positive:
    sensitivity 0, specificity 1) with a finite threshold just above the highest score, so that
    "score >= threshold" reproduces the reported sensitivity and specificity."""
    fpr, tpr, thr = roc_curve(y, score)
    j = tpr - fpr
    i = int(np.argmax(j))
    top = float(np.max(np.asarray(score, dtype=np.float64)))
    t = float(thr[i]) if np.isfinite(thr[i]) and thr[i] <= top else float(np.nextafter(top, np.inf))
    return {
        "threshold": t,
        "sensitivity": float(tpr[i]),
        "specificity": float(1 - fpr[i]),
        "j": float(j[i]),
        "fpr": float(fpr[i]),
        "tpr": float(tpr[i]),
    }


def one_vs_rest_auc(y_true: np.ndarray, prob: np.ndarray, class_names: Sequence[str], alpha=0.05):
    """Per-class one-vs-rest AUC with DeLong CI, plus the macro mean over defined classes."""
    per = {}
    vals = []
    for c, name in enumerate(class_names):
        yb = (np.asarray(y_true) == c).astype(int)
        if yb.sum() == 0 or yb.sum() == len(yb):
            per[name] = {"auc": None, "ci_low": None, "ci_high": None, "n_pos": int(yb.sum())}
            continue
        if yb.sum() < 2 or len(yb) - yb.sum() < 2:  # AUC defined, its DeLong CI is not
            a, lo, hi = auc(yb, prob[:, c]), None, None
        else:
            a, lo, hi = delong_ci(yb, prob[:, c], alpha)
        per[name] = {"auc": a, "ci_low": lo, "ci_high": hi, "n_pos": int(yb.sum())}
        vals.append(a)
    macro = float(np.mean(vals)) if vals else None
    return macro, per


def classification_report_dict(y_true, prob, class_names: Sequence[str], topk: int = 3) -> dict:
    """Accuracy, balanced accuracy, macro F1, top-k accuracy, macro/per-class AUC with DeLong CI,
    per-class recall/precision/specificity/F1, and the confusion matrix (counts and row %).

    ``prob`` is (N, C) (rows need not be normalised); ``y_true`` integer class indices.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true, dtype=int)
    prob = np.asarray(prob, dtype=np.float64)
    C = len(class_names)
    labels = list(range(C))
    pred = prob.argmax(axis=1)
    order = np.argsort(-prob, axis=1)[:, :topk]
    topk_acc = float(np.mean([y_true[i] in order[i] for i in range(len(y_true))])) if len(y_true) else 0.0
    present = sorted(set(y_true.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, pred, labels=labels)
    rows = cm.sum(axis=1, keepdims=True)
    cm_pct = np.where(rows > 0, 100.0 * cm / np.maximum(rows, 1), 0.0)
    macro_auc, per_auc = one_vs_rest_auc(y_true, prob, class_names)
    per = {}
    N = cm.sum()
    for c, name in enumerate(class_names):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        tn = N - tp - fp - fn
        per[name] = {
            "support": int(sup[c]),
            "recall": float(rec[c]),
            "precision": float(prec[c]),
            "f1": float(f1[c]),
            "specificity": float(tn / (tn + fp)) if (tn + fp) > 0 else None,
            **{k: v for k, v in per_auc[name].items() if k != "n_pos"},
        }
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, pred)) if len(y_true) else 0.0,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)) if len(y_true) else 0.0,
        # macro over classes present in the ground truth
        "macro_f1": float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0)),
        f"top{topk}_accuracy": topk_acc,
        "top3_accuracy": topk_acc if topk == 3 else None,
        "macro_auc": macro_auc,
        "per_class": per,
        "classes": list(class_names),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_row_percent": np.round(cm_pct, 2).tolist(),
    }


def _balacc_macro_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balanced accuracy and macro F1 (classes present in the truth) of stacked confusion matrices (B, C, C)."""
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    support = cm.sum(2)
    predicted = cm.sum(1)
    present = support > 0
    recall = np.where(present, tp / np.maximum(support, 1), 0.0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    k = present.sum(1)
    return (recall * present).sum(1) / k, (f1 * present).sum(1) / k


def paired_bootstrap(
    y_true, pred_a, pred_b, num_classes: int, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Difference b - a in balanced accuracy and macro F1 of two predictions of the same photos.

    Class-stratified paired bootstrap (each class resampled within itself, so every class keeps
    its support): {metric: {"diff", "ci_low", "ci_high", "share_below_zero"}}.
    """
    y = np.asarray(y_true, dtype=int)
    pa, pb = np.asarray(pred_a, dtype=int), np.asarray(pred_b, dtype=int)
    C = int(num_classes)
    rng = np.random.default_rng(seed)
    idx = np.empty((n_boot, len(y)), dtype=np.int64)
    pos = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        idx[:, pos : pos + len(members)] = rng.choice(members, (n_boot, len(members)), replace=True)
        pos += len(members)
    offs = (np.arange(n_boot) * C * C)[:, None]

    def cms(pred, ix):
        flat = (offs[: len(ix)] + y[ix] * C + pred[ix]).ravel()
        return np.bincount(flat, minlength=len(ix) * C * C).reshape(len(ix), C, C)

    full = np.arange(len(y))[None]
    ba_a, f1_a = _balacc_macro_f1(cms(pa, full))
    ba_b, f1_b = _balacc_macro_f1(cms(pb, full))
    bba, bf1a = _balacc_macro_f1(cms(pa, idx))
    bbb, bf1b = _balacc_macro_f1(cms(pb, idx))
    out = {}
    for name, point, boot in (
        ("balanced_accuracy", ba_b[0] - ba_a[0], bbb - bba),
        ("macro_f1", f1_b[0] - f1_a[0], bf1b - bf1a),
    ):
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        out[name] = {
            "diff": float(point),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "share_below_zero": float((boot < 0).mean()),
        }
    out["n_boot"] = n_boot
    return out
