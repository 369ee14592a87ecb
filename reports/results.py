"""Results of a reader study: ROC of the model, reader operating points and curves, MRMC,
per-reader table, AI-aided changes. Reads only; cached per study until readings change.

ROC / AUC / DeLong / Youden come from inference.ml.metrics; the MRMC analysis from reports.mrmc.
"""

from __future__ import annotations

import math

import numpy as np
from django.core.cache import cache

from inference.ml import metrics

from . import mrmc, questions
from .models import (
    ConfidenceScale,
    QuestionType,
    ReaderStudy,
    Session,
)
from .mrmc.binary import fair_comparison
from .study_data import StudyData, load_study_data

CACHE_SECONDS = 6 * 3600
VALIDATION = (
    "Validated in tests/reports/test_vandyke.py and test_mrmc.py: (1) the public Van Dyke study (5 readers x 114 cases, "
    "two modalities) reproduces every number MRMCaov prints with DeLong covariances (variance components, F 4.484854, "
    "ddf 15.06611, p 0.05123303, CI) and the Iowa OR-DBM MRMC 2.51 program prints with jackknife covariances "
    "(F 4.46, ddf 15.26, p 0.0517), to the printed digits; (2) a 2-reader, 6-case example computed by hand; (3) an "
    "independent DBM jackknife-pseudovalue ANOVA; (4) Monte-Carlo: the OR-DeLong standard error against the actual "
    "spread of the estimate over simulated studies, and 95% CI coverage under the null."
)


def _f(x):
    """JSON-safe float (None for nan/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _score_matrix(ans: np.ndarray, conf: np.ndarray, c: int, scale: str) -> np.ndarray:
    """Reader ratings for "case is class c" (see questions.reader_score), vectorised."""
    hit = ans == c
    if scale == ConfidenceScale.NONE:
        return hit.astype(float)
    cc = np.where(np.isnan(conf), 0.0, conf)
    return np.where(hit, cc, -cc)


def _rates(ans_row: np.ndarray, y: np.ndarray, c: int) -> dict:
    ok = ans_row >= 0
    pos, neg = ok & (y == 1), ok & (y == 0)
    tpr = float(np.mean(ans_row[pos] == c)) if pos.any() else None
    fpr = float(np.mean(ans_row[neg] == c)) if neg.any() else None
    return {
        "tpr": tpr,
        "fpr": fpr,
        "sensitivity": tpr,
        "specificity": None if fpr is None else 1 - fpr,
        "n": int(ok.sum()),
    }


def _curve(y, s) -> dict:
    fpr, tpr, _ = metrics.roc_curve(y, s)
    return {"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()}


def _included(d: StudyData, ans: np.ndarray, y: np.ndarray, method: str) -> tuple[list[int], str]:
    """Readers in the analysis and the covariance method. "auto": DeLong when every reader with
    readings finished, else the jackknife (readers who skipped cases keep their place)."""
    started = [j for j in range(ans.shape[0]) if (ans[j] >= 0).any()]
    complete = [j for j in started if (ans[j] >= 0).all()]
    if method == "auto":
        method = "delong" if complete == started else "jackknife"
    if method == "delong":
        return complete, method

    def enough(j):
        ok = ans[j] >= 0
        return (ok & (y == 1)).sum() >= 2 and (ok & (y == 0)).sum() >= 2

    return [j for j in started if enough(j)], method


def _missing_note(d: StudyData, ans: np.ndarray, included: list[int], method: str) -> str:
    started = [j for j in range(ans.shape[0]) if (ans[j] >= 0).any()]
    partial = [j for j in included if not (ans[j] >= 0).all()]
    left = len(started) - len(included)
    if method == "delong":
        msg = "DeLong covariances: readers who have read every case only"
        return msg + (
            f"; {left} reader(s) who have not finished are left out of the analysis and of the mean reader."
            if left
            else "."
        )
    msg = (
        "Jackknife covariances: each reader's figures use the cases that reader read; deleting a case a reader "
        "skipped leaves that reader's estimate unchanged"
    )
    if partial:
        msg += f"; {len(partial)} reader(s) have not read every case and are included"
    if left:
        msg += f"; {left} reader(s) with fewer than two positive or two negative cases read are left out"
    return msg + ". The mean reader averages the same readers."


def _task(
    d: StudyData, c: int, session: str, alpha: float = 0.05, method: str = "auto", margin: float | None = None
) -> dict | None:
    """One binary task (the binary question, or class c one-vs-rest) for one session."""
    y = (d.truth == c).astype(int)
    valid = d.truth >= 0
    y_v = y[valid]
    n_pos, n_neg = int(y_v.sum()), int((1 - y_v).sum())
    task = {
        "key": d.class_codes[c],
        "label": d.class_labels[c],
        "session": session,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "model": None,
        "readers": [],
        "mean_reader": None,
        "mrmc": None,
        "fair": None,
        "notes": [],
    }
    if n_pos < 2 or n_neg < 2:
        task["notes"].append(
            f"Needs at least two positive and two negative cases ({n_pos} positive, {n_neg} negative): "
            "no confidence intervals or MRMC comparison."
        )
        if n_pos == 0 or n_neg == 0:
            return task
    ans = d.answers[session][:, valid]
    conf = d.confidence[session][:, valid]
    scale = d.study.confidence_scale
    inc, method = _included(d, ans, y_v, method) if n_pos >= 2 and n_neg >= 2 else ([], method)
    task["covariance"] = method
    task["missing_note"] = _missing_note(d, ans, inc, method) if inc else ""
    read = ans[inc] >= 0
    scores = _score_matrix(ans[inc], conf[inc], c, scale) if inc else np.zeros((0, y_v.size))
    ms = d.model[valid, c] if d.model is not None else None
    est = cov = None
    if ms is not None and n_pos >= 2 and n_neg >= 2:
        a, v = metrics.delong_auc_variance(y_v, ms)
        lo, hi = metrics.logit_ci(a, math.sqrt(max(v, 0.0)), alpha)
    elif ms is not None:
        a, lo, hi = metrics.auc(y_v, ms), None, None
    if ms is not None:
        yd = metrics.youden(y_v, ms)
        task["model"] = {
            "auc": a,
            "ci_low": lo,
            "ci_high": hi,
            "ci_scale": "logit",
            "youden": {k: _f(v) for k, v in yd.items()},
            "roc": _curve(y_v, ms),
        }
    if inc:
        est, cov = mrmc.covariance(y_v, scores, read, method)
    pos_in = {j: k for k, j in enumerate(inc)}
    for j, r in enumerate(d.readers):
        rates = _rates(ans[j], y_v, c)
        if rates["n"] == 0:
            continue
        row = {
            "reader_id": r["id"],
            "name": r["name"],
            "experience": r["experience"],
            **rates,
            "complete": bool((ans[j] >= 0).all()),
            "included": j in pos_in,
            "auc": None,
            "auc_ci": None,
            "roc": None,
        }
        k = pos_in.get(j)
        if k is not None:
            a_k, se = float(est[k]), math.sqrt(max(float(cov[k, k]), 0.0))
            row["auc"], row["auc_ci"] = a_k, list(metrics.logit_ci(a_k, se, alpha))
            if scale != ConfidenceScale.NONE:
                row["roc"] = _curve(y_v[read[k]], scores[k][read[k]])
        task["readers"].append(row)
    # the mean reader averages exactly the readers in the analysis (all who answered when there is none)
    pts = [r for r in task["readers"] if r["tpr"] is not None and r["fpr"] is not None and (r["included"] or not inc)]
    if pts:
        task["mean_reader"] = {
            "tpr": float(np.mean([r["tpr"] for r in pts])),
            "fpr": float(np.mean([r["fpr"] for r in pts])),
            "n_readers": len(pts),
            "which": "readers in the analysis" if inc else "every reader who answered",
        }
        task["mean_reader"]["sensitivity"] = task["mean_reader"]["tpr"]
        task["mean_reader"]["specificity"] = 1 - task["mean_reader"]["fpr"]
    if ms is not None and inc:
        res = mrmc.readers_vs_model(y_v, scores, ms, read=read, method=method, margin=margin, alpha=alpha)
        res["reader_ids"] = [d.readers[j]["id"] for j in inc]
        res["excluded_incomplete"] = len([r for r in task["readers"] if not r["included"]])
        res["missing_note"] = task["missing_note"]
        res["rating"] = (
            "confidence-weighted ratings"
            if scale != ConfidenceScale.NONE
            else "yes/no answers (2-point ratings: AUC = (sensitivity + specificity) / 2)"
        )
        task["mrmc"] = res
        if scale == ConfidenceScale.NONE:
            task["fair"] = fair_comparison(y_v, (ans[inc] == c).astype(float), read, ms, alpha=alpha)
    elif ms is None:
        task["notes"].append("No model outputs for every case: no model curve or MRMC comparison.")
    elif n_pos >= 2 and n_neg >= 2:
        task["notes"].append("No reader has read enough cases yet: no MRMC comparison.")
    return task


def _aided_vs_unaided(
    d: StudyData, c: int, alpha: float = 0.05, method: str = "auto", margin: float | None = None
) -> dict | None:
    """OR two-test comparison (unaided = test 1, AI-aided = test 2) of the readers' AUCs for task c:
    readers who finished both sessions (DeLong), or who read enough of both (jackknife)."""
    valid = d.truth >= 0
    y = (d.truth[valid] == c).astype(int)
    if y.sum() < 2 or y.size - y.sum() < 2:
        return None
    u, a = d.answers[Session.UNAIDED][:, valid], d.answers[Session.AIDED][:, valid]
    inc_u, meth = _included(d, u, y, method)
    inc_a, meth_a = _included(d, a, y, method)
    if meth != meth_a:  # auto chose differently per session: one method for both
        meth = "jackknife"
        inc_u, _ = _included(d, u, y, meth)
        inc_a, _ = _included(d, a, y, meth)
    both = [j for j in inc_u if j in set(inc_a)]
    if len(both) < 2:
        return None
    scale = d.study.confidence_scale
    su = _score_matrix(u[both], d.confidence[Session.UNAIDED][:, valid][both], c, scale)
    sa = _score_matrix(a[both], d.confidence[Session.AIDED][:, valid][both], c, scale)
    read = np.stack([u[both] >= 0, a[both] >= 0])
    out = mrmc.tests_compared(
        y, np.stack([su, sa]), read=read if meth == "jackknife" else None, method=meth, margin=margin, alpha=alpha
    )
    out["reader_ids"] = [d.readers[j]["id"] for j in both]
    return out


def _reader_table(d: StudyData, session: str) -> list[dict]:
    out = []
    valid = d.truth >= 0
    binary = d.study.question_type == QuestionType.BINARY
    C = len(d.class_codes)
    for j, r in enumerate(d.readers):
        a = d.answers[session][j]
        ok = (a >= 0) & valid
        n = int(ok.sum())
        row = {
            "reader_id": r["id"],
            "name": r["name"],
            "experience": r["experience"],
            "n_read": n,
            "accuracy": None,
            "balanced_accuracy": None,
            "sensitivity": None,
            "specificity": None,
            "mean_time_s": None,
            "mean_active_s": None,
        }
        if n:
            t, p = d.truth[ok], a[ok]
            row["accuracy"] = float(np.mean(t == p))
            recalls = [float(np.mean(p[t == k] == k)) for k in range(C) if (t == k).any()]
            row["balanced_accuracy"] = float(np.mean(recalls)) if recalls else None
            if binary:
                pos, neg = t == 0, t == 1  # class 0 is "pos"
                row["sensitivity"] = float(np.mean(p[pos] == 0)) if pos.any() else None
                row["specificity"] = float(np.mean(p[neg] == 1)) if neg.any() else None
            sm = d.server_ms[session][j][ok]
            am = d.active_ms[session][j][ok]
            row["mean_time_s"] = _f(np.nanmean(sm) / 1000) if np.isfinite(sm).any() else None
            row["mean_active_s"] = _f(np.nanmean(am) / 1000) if np.isfinite(am).any() else None
        out.append(row)
    return out


def _model_summary(d: StudyData, tasks: list[dict]) -> dict | None:
    if d.model is None:
        return None
    valid = d.truth >= 0
    t = d.truth[valid]
    p = d.model[valid].argmax(axis=1)
    C = len(d.class_codes)
    recalls = [float(np.mean(p[t == k] == k)) for k in range(C) if (t == k).any()]
    out = {
        "accuracy": float(np.mean(p == t)),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "rule": "argmax of the class scores",
    }
    if d.study.question_type == QuestionType.BINARY and tasks and tasks[0].get("model"):
        yd = tasks[0]["model"]["youden"]
        s = d.model[valid, 0]
        y = t == 0
        pred = s >= yd["threshold"]
        out.update(
            {
                "sensitivity": yd["sensitivity"],
                "specificity": yd["specificity"],
                "accuracy": float(np.mean(pred == y)),
                "threshold": yd["threshold"],
                "rule": "score >= Youden threshold (chosen on these cases: optimistic)",
            }
        )
        out["balanced_accuracy"] = (yd["sensitivity"] + yd["specificity"]) / 2
    return out


def _aided_changes(d: StudyData) -> list[dict]:
    out = []
    binary = d.study.question_type == QuestionType.BINARY
    valid = d.truth >= 0
    for j, r in enumerate(d.readers):
        u, a = d.answers[Session.UNAIDED][j], d.answers[Session.AIDED][j]
        both = (u >= 0) & (a >= 0) & valid
        if not both.any():
            continue
        t = d.truth[both]
        cu, ca = u[both] == t, a[both] == t
        row = {
            "reader_id": r["id"],
            "name": r["name"],
            "experience": r["experience"],
            "n_cases": int(both.sum()),
            "accuracy_unaided": float(cu.mean()),
            "accuracy_aided": float(ca.mean()),
            "correct_to_wrong": int(np.sum(cu & ~ca)),
            "wrong_to_correct": int(np.sum(~cu & ca)),
            "changed": int(np.sum(u[both] != a[both])),
        }
        row["delta_accuracy"] = row["accuracy_aided"] - row["accuracy_unaided"]
        for name, k, good in (("sensitivity", t == 0, 0), ("specificity", t == 1, 1)):
            if binary and k.any():
                row[f"{name}_unaided"] = float(np.mean(u[both][k] == good))
                row[f"{name}_aided"] = float(np.mean(a[both][k] == good))
                row[f"delta_{name}"] = row[f"{name}_aided"] - row[f"{name}_unaided"]
            else:
                row[f"{name}_unaided"] = row[f"{name}_aided"] = row[f"delta_{name}"] = None
        row["harmed"] = row["delta_accuracy"] < 0
        out.append(row)
    return out


def _holm(tasks: list[dict]) -> str:
    """Holm-adjusted p-values of the readers-vs-model comparisons across one-vs-rest tasks (in place)."""
    ps = [(t["mrmc"]["p_value"], t) for t in tasks if t.get("mrmc") and t["mrmc"].get("p_value") is not None]
    if len(ps) < 2:
        return ""
    k = len(ps)
    running = 0.0
    for i, (p, t) in enumerate(sorted(ps, key=lambda x: x[0])):
        running = max(running, min(1.0, (k - i) * p))
        t["mrmc"]["p_holm"] = running
    return (
        f"{k} one-vs-rest comparisons: each p-value and 95% interval holds for its class alone; "
        f"the Holm-adjusted p-value (family-wise error {0.05:.0%} over the {k} classes) is shown beside it."
    )


METHODS = ("auto", "delong", "jackknife")


def compute_results(d: StudyData, alpha: float = 0.05, method: str = "auto", margin: float | None = None) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown covariance method {method!r}")
    study = d.study
    binary = study.question_type == QuestionType.BINARY
    task_classes = [0] if binary else list(range(len(d.class_codes)))
    sessions = [Session.UNAIDED]
    if study.aided_session and (d.answers[Session.AIDED] >= 0).any():
        sessions.append(Session.AIDED)
    tasks = {s: [t for c in task_classes if (t := _task(d, c, s, alpha, method, margin)) is not None] for s in sessions}
    for t, c in zip(tasks.get(Session.AIDED, []), task_classes):
        t["aided_vs_unaided"] = _aided_vs_unaided(d, c, alpha, method, margin)
    multiplicity = "" if binary else _holm(tasks[Session.UNAIDED])
    warnings = []
    if study.model_version_id is None:
        warnings.append("No compared model: reader results only.")
    elif d.model is None:
        warnings.append(f"The model's output is missing for {d.model_missing} case(s): no model curve or MRMC.")
    n_excluded = int(np.sum(d.truth < 0))
    if n_excluded:
        warnings.append(
            f"{n_excluded} case(s) have a reference label that does not fit the question; they are left out."
        )
    experience_counts = {}
    for r in d.readers:
        experience_counts[r["experience"]] = experience_counts.get(r["experience"], 0) + 1
    return {
        "study": {
            "id": study.pk,
            "title": study.title,
            "question_type": study.question_type,
            "question": questions.question_text(study, d.tmap),
            "confidence_scale": study.confidence_scale,
            "status": study.status,
            "aided_session": study.aided_session,
            "model": str(study.model_version) if study.model_version_id else None,
            "positive_codes": list(study.positive_codes),
        },
        "n_cases": int(d.truth.size),
        "n_cases_analysed": int(np.sum(d.truth >= 0)),
        "n_readers": len(d.readers),
        "classes": [
            {"code": c, "label": lbl, "n": int(np.sum(d.truth == i))}
            for i, (c, lbl) in enumerate(zip(d.class_codes, d.class_labels))
        ],
        "experience_counts": experience_counts,
        "tasks": tasks[Session.UNAIDED],
        "aided_tasks": tasks.get(Session.AIDED, []),
        "readers": _reader_table(d, Session.UNAIDED),
        "readers_aided": _reader_table(d, Session.AIDED) if Session.AIDED in tasks else [],
        "model_summary": _model_summary(d, tasks[Session.UNAIDED]),
        "aided": _aided_changes(d) if Session.AIDED in tasks else [],
        "method": mrmc.METHOD,
        "reference": mrmc.REFERENCE,
        "validation": VALIDATION,
        "warnings": warnings,
        "alpha": alpha,
        "covariance_choice": method,
        "margin": margin,
        "multiplicity": multiplicity,
    }


def cache_key(study: ReaderStudy, method: str = "auto", margin: float | None = None) -> str:
    # seed + creation time: a re-used primary key (e.g. after a rollback) never hits an old entry
    return (
        f"reports:study-results:{study.pk}:{study.seed}:{study.created_at.timestamp():.6f}:v{study.results_version}"
        f":{method}:{margin}"
    )


def reader_study_results(
    *, study: ReaderStudy, use_cache: bool = True, method: str = "auto", margin: float | None = None
) -> dict:
    """The results dict (JSON-serialisable); cached until a reading, case or model output changes.
    ``method`` auto | delong | jackknife (covariances); ``margin`` the non-inferiority margin or None."""
    key = cache_key(study, method, margin)
    if use_cache:
        hit = cache.get(key)
        if hit is not None:
            return hit
    res = compute_results(load_study_data(study), method=method, margin=margin)
    if use_cache:
        cache.set(key, res, CACHE_SECONDS)
    return res
