"""The compared model of a reader study: its case-level answers (from the inference app's finished
predictions, else run now through the inference app) and which study cases it may have been trained on
(from the model's manifest)."""

from __future__ import annotations

import logging

from .models import ReaderStudy, StudyCase

log = logging.getLogger(__name__)


def training_case_ids(model_version) -> tuple[str, set[str]]:
    """What the model's manifest says about its training cases.

    Returns ("train", ids) when it lists training case ids, ("test", ids) when it lists only the
    held-out test cases, ("unknown", set()) otherwise."""
    from inference.selectors import model_manifest

    man = model_manifest(model_version)
    split = man.get("split") or {}
    for key in ("train_cases", "training_cases", "train_case_ids"):
        ids = split.get(key) or man.get(key)
        if ids:
            return "train", {str(i) for i in ids}
    ids = split.get("test_cases")
    if ids:
        return "test", {str(i) for i in ids}
    return "unknown", set()


def study_training_overlap(*, study: ReaderStudy) -> str:
    """Mark each study case: in_training yes / no / possible (not in the held-out split) / unknown."""
    if study.model_version is None:
        study.study_cases.update(in_training="unknown")
        return "unknown"
    kind, ids = training_case_ids(study.model_version)
    rows = list(study.study_cases.select_related("case"))
    for sc in rows:
        keys = {sc.case.external_id, str(sc.case.pk), sc.case.reference} - {""}
        if kind == "train":
            sc.in_training = "yes" if keys & ids else "no"
        elif kind == "test":  # a case created after the model cannot have been trained on
            after = sc.case.created_at > study.model_version.created_at
            sc.in_training = "no" if keys & ids or after else ("possible" if sc.case.external_id else "unknown")
        else:
            sc.in_training = "unknown"
    StudyCase.objects.bulk_update(rows, ["in_training"])
    return kind


def _mean_probs(rankeds: list[list[dict]]) -> dict[str, float] | None:
    acc: dict[str, float] = {}
    n = 0
    for ranked in rankeds:
        if not ranked:
            continue
        n += 1
        for item in ranked:
            acc[item["sub_class"]] = acc.get(item["sub_class"], 0.0) + float(item["probability"])
    return {k: v / n for k, v in acc.items()} if n else None


def _model_outputs_from_predictor(*, study: ReaderStudy, missing: list, result: dict) -> None:
    """Fill the ``missing`` study cases from the compared model run now by the inference app (its cached
    predictor, with each photo's metadata); the cases it fills leave ``missing``."""
    from inference import loader
    from inference.services import photos_ranked

    if not loader.artefact_present(study.model_version):
        result["reason"] = "The model artefact is not available on this server."
        return
    try:
        for sc in missing[:]:
            photos = list(sc.case.photos.order_by("pk"))
            if not photos:
                continue
            sc.model_probs = _mean_probs(photos_ranked(model_version=study.model_version, photos=photos))
            sc.model_source = "predictor"
            result["from_predictor"] += 1
            missing.remove(sc)
    except Exception as exc:  # a broken artefact must not break the study page
        log.exception("predictor failed for study %s", study.pk)
        result["reason"] = f"The model could not be run: {exc}"


def study_model_outputs_refresh(*, study: ReaderStudy, use_predictor: bool = True) -> dict:
    """Fill StudyCase.model_probs (case-level mean over photos of the fused probabilities) from the
    inference app's finished predictions, else from the model run now through the inference app."""
    result = {"from_predictions": 0, "from_predictor": 0, "missing": 0, "reason": ""}
    if study.model_version is None:
        result["reason"] = "No compared model is set."
        return result
    try:
        from inference.models import Prediction
    except ImportError:  # pragma: no cover - inference app absent
        Prediction = None
    rows = list(study.study_cases.select_related("case"))
    missing = []
    by_case: dict[int, list] = {}
    if Prediction is not None:
        for case_id, ranked in Prediction.objects.filter(
            photo__case__in=[sc.case_id for sc in rows],
            model_version=study.model_version,
            status="done",
        ).values_list("photo__case_id", "ranked"):
            by_case.setdefault(case_id, []).append(ranked)
    for sc in rows:
        probs = _mean_probs(by_case.get(sc.case_id, []))
        if probs:
            sc.model_probs, sc.model_source = probs, "prediction"
            result["from_predictions"] += 1
        else:
            missing.append(sc)
    if missing and use_predictor:
        _model_outputs_from_predictor(study=study, missing=missing, result=result)
    elif missing:
        result["reason"] = "No finished predictions of this model for these cases."
    result["missing"] = len(missing)
    StudyCase.objects.bulk_update(rows, ["model_probs", "model_source"])
    study.results_changed()
    return result
