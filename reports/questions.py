"""What a study asks and how answers, truths and model outputs map onto classes.

Pure helpers over a small taxonomy map (no queries once the map is built).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import ClassLevel, ConfidenceScale, QuestionType, ReaderStudy

GRADE_LABELS = {"1": "Benign", "2": "Low malignancy", "3": "High malignancy"}


@dataclass
class TaxonomyMap:
    sub_meta: dict[str, str]  # sub code -> meta code
    sub_grade: dict[str, int | None]  # sub code -> malignancy grade
    names: dict[str, str]  # code -> display name
    subs: list[str]  # in taxonomy order
    metas: list[str]
    sub_pk: dict[int, str] = field(default_factory=dict)  # SubClass pk -> code


def taxonomy_map(taxonomy) -> TaxonomyMap:
    from annotation.models import MetaClass, SubClass

    metas = list(
        MetaClass.objects.filter(taxonomy=taxonomy).order_by("order", "code").values_list("code", "display_name")
    )
    subs = list(
        SubClass.objects.filter(taxonomy=taxonomy)
        .order_by("meta_class__order", "order", "code")
        .values_list("pk", "code", "display_name", "meta_class__code", "malignancy_grade")
    )
    names = {c: n or c for c, n in metas}
    names.update({c: n or c for _, c, n, _, _ in subs})
    return TaxonomyMap(
        sub_meta={c: m for _, c, _, m, _ in subs},
        sub_grade={c: g for _, c, _, _, g in subs},
        names=names,
        subs=[c for _, c, _, _, _ in subs],
        metas=[c for c, _ in metas],
        sub_pk={pk: c for pk, c, _, _, _ in subs},
    )


def classes(study: ReaderStudy, tmap: TaxonomyMap) -> list[tuple[str, str]]:
    """[(code, label)] the reader chooses from."""
    if study.question_type == QuestionType.BINARY:
        return [("pos", positive_label(study, tmap)), ("neg", "No / other")]
    if study.question_type == QuestionType.GRADE:
        return list(GRADE_LABELS.items())
    codes = tmap.metas if study.class_level == ClassLevel.META else tmap.subs
    return [(c, tmap.names.get(c, c)) for c in codes]


def positive_label(study: ReaderStudy, tmap: TaxonomyMap) -> str:
    names = [tmap.names.get(c, c) for c in study.positive_codes]
    return " or ".join(names) if names else "positive"


def question_text(study: ReaderStudy, tmap: TaxonomyMap) -> str:
    if study.question_text:
        return study.question_text
    if study.question_type == QuestionType.BINARY:
        return f"Is this {positive_label(study, tmap)}?"
    if study.question_type == QuestionType.GRADE:
        return "What is the malignancy grade of this lesion?"
    return (
        "What is the diagnosis?"
        if study.class_level == ClassLevel.SUB
        else "Which group of diseases does this lesion belong to?"
    )


def truth_class(study: ReaderStudy, tmap: TaxonomyMap, sub_code: str) -> str | None:
    if study.question_type == QuestionType.BINARY:
        return "pos" if sub_code in set(study.positive_codes) else "neg"
    if study.question_type == QuestionType.GRADE:
        g = tmap.sub_grade.get(sub_code)
        return str(g) if g else None
    return tmap.sub_meta.get(sub_code) if study.class_level == ClassLevel.META else sub_code


def model_class_scores(
    study: ReaderStudy, tmap: TaxonomyMap, probs: dict[str, float] | None
) -> dict[str, float] | None:
    """The model's score per answer class from its fused sub-class probabilities (two-stage
    fine-to-coarse: coarse scores are sums of fine probabilities, METHODS.md 3)."""
    if not probs:
        return None
    if study.question_type == QuestionType.BINARY:
        pos = set(study.positive_codes)
        p = float(sum(v for k, v in probs.items() if k in pos))
        return {"pos": p, "neg": 1.0 - p}
    if study.question_type == QuestionType.GRADE:
        out = {"1": 0.0, "2": 0.0, "3": 0.0}
        for k, v in probs.items():
            g = tmap.sub_grade.get(k)
            if g:
                out[str(g)] += float(v)
        total = sum(out.values())
        return {k: v / total for k, v in out.items()} if total > 0 else out
    if study.class_level == ClassLevel.META:
        out = dict.fromkeys(tmap.metas, 0.0)
        for k, v in probs.items():
            m = tmap.sub_meta.get(k)
            if m is not None:
                out[m] += float(v)
        return out
    return {s: float(probs.get(s, 0.0)) for s in tmap.subs}


def reader_score(answer: str, confidence: float | None, cls: str, scale: str) -> float:
    """A reader's rating for "case is `cls`": a yes/no answer is a 2-point rating (1/0); with a
    confidence scale it becomes +c (answered cls with confidence c) or -c (answered otherwise)."""
    hit = answer == cls
    if scale == ConfidenceScale.NONE or confidence is None:
        return 1.0 if hit else 0.0
    return float(confidence) if hit else -float(confidence)


def confidence_bounds(scale: str) -> tuple[float, float] | None:
    if scale == ConfidenceScale.FIVE:
        return 1.0, 5.0
    if scale == ConfidenceScale.PERCENT:
        return 0.0, 100.0
    return None
