"""Inter-annotator agreement on boxes and scoring against gold reference boxes.

Pure part (no Django): `iou`, `match_boxes` (Hungarian assignment on IoU, pairs kept at
IoU >= threshold), `photo_agreement`. Database part: `agreement_report` (per photo,
per annotator pair, low-agreement list) and `gold_scores` (per annotator precision,
recall, mean IoU, label accuracy against the gold boxes).

Only boxes an annotator drew or changed count: boxes pre-filled from another annotation
or proposed by the model and left unchanged are left out (see Box.origin).

Per-photo agreement is the F1 of matched boxes: 2 * matches / (n_a + n_b) (1.0 when both
annotators drew no box). Label agreement is counted separately, over matched pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

# (x0, y0, x1, y1, label, meta_label)
BoxT = tuple


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_boxes(a: Sequence[BoxT], b: Sequence[BoxT], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matching maximising total IoU (Hungarian); pairs below `threshold` dropped."""
    if not a or not b:
        return []
    m = np.array([[iou(x, y) for y in b] for x in a])
    rows, cols = linear_sum_assignment(-m)
    return [(int(i), int(j), float(m[i, j])) for i, j in zip(rows, cols) if m[i, j] >= threshold]


@dataclass
class PairAgreement:
    n_a: int
    n_b: int
    matches: int
    mean_iou: float | None
    label_agree: int  # matched pairs with the same label (sub-class, or meta-class when one is meta-only)
    meta_agree: int  # matched pairs with the same meta-class

    @property
    def f1(self) -> float:
        return 1.0 if self.n_a + self.n_b == 0 else 2 * self.matches / (self.n_a + self.n_b)

    @property
    def label_rate(self) -> float | None:
        return self.label_agree / self.matches if self.matches else None


def photo_agreement(a: Sequence[BoxT], b: Sequence[BoxT], threshold: float = 0.5) -> PairAgreement:
    pairs = match_boxes(a, b, threshold)
    same = sum(1 for i, j, _ in pairs if a[i][4] == b[j][4])
    same_meta = sum(1 for i, j, _ in pairs if a[i][5] == b[j][5])
    return PairAgreement(
        len(a), len(b), len(pairs), float(np.mean([p[2] for p in pairs])) if pairs else None, same, same_meta
    )


@dataclass
class Score:
    photos: int = 0
    predicted: int = 0
    reference: int = 0
    tp: int = 0
    ious: list[float] = field(default_factory=list)
    label_ok: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.reference if self.reference else None

    @property
    def mean_iou(self) -> float | None:
        return float(np.mean(self.ious)) if self.ious else None

    @property
    def label_accuracy(self) -> float | None:
        return self.label_ok / self.tp if self.tp else None


def score_against(reference: Sequence[BoxT], predicted: Sequence[BoxT], score: Score, threshold: float = 0.5) -> Score:
    pairs = match_boxes(reference, predicted, threshold)
    score.photos += 1
    score.reference += len(reference)
    score.predicted += len(predicted)
    score.tp += len(pairs)
    score.ious += [p[2] for p in pairs]
    score.label_ok += sum(1 for i, j, _ in pairs if reference[i][4] == predicted[j][4])
    return score


# --------------------------------------------------------------------------- database
@dataclass
class AnnBoxes:
    """One annotation's boxes for agreement: `own` were drawn or changed by the annotator;
    `copied_from` are the other annotators' boxes it copied unchanged (pre-fill), and
    `borrowed` counts copied or model-proposed boxes left unchanged."""

    own: list[BoxT] = field(default_factory=list)
    every: list[BoxT] = field(default_factory=list)
    own_pks: list[int] = field(default_factory=list)
    copied_from: set[int] = field(default_factory=set)
    borrowed: int = 0


def _boxes_by_annotation(annotation_ids) -> dict[int, AnnBoxes]:
    from .models import Box, BoxOrigin

    out: dict[int, AnnBoxes] = defaultdict(AnnBoxes)
    rows = (
        Box.objects.filter(annotation_id__in=list(annotation_ids))
        .order_by("id")
        .values_list(
            "annotation_id",
            "pk",
            "x0",
            "y0",
            "x1",
            "y1",
            "sub_class__code",
            "meta_class__code",
            "origin",
            "source_box_id",
        )
    )
    for ann, pk, x0, y0, x1, y1, sub, meta, origin, source in rows:
        entry = out[ann]
        entry.every.append((x0, y0, x1, y1, sub or meta, meta))
        if origin == BoxOrigin.DRAWN:
            entry.own.append((x0, y0, x1, y1, sub or meta, meta))
            entry.own_pks.append(pk)
        else:
            entry.borrowed += 1
            if source:
                entry.copied_from.add(source)
    return out


def _independent(a: AnnBoxes, b: AnnBoxes) -> tuple[list[BoxT], list[BoxT]] | None:
    """The boxes of a pair that count: each side's own boxes, minus those the other side
    copied unchanged. None when one side only took over boxes (nothing to compare)."""
    a_boxes = [bx for bx, pk in zip(a.own, a.own_pks) if pk not in b.copied_from]
    b_boxes = [bx for bx, pk in zip(b.own, b.own_pks) if pk not in a.copied_from]
    if (a.borrowed and not a.own) or (b.borrowed and not b.own):
        return None
    return a_boxes, b_boxes


def agreement_report(*, photos=None, threshold: float = 0.5, low: float = 0.7) -> dict:
    """Agreement of every pair of annotators on every photo both annotated (drafts
    excluded; gold annotations are scored separately)."""
    from .models import AnnotationStatus, PhotoAnnotation

    anns = PhotoAnnotation.objects.exclude(status=AnnotationStatus.TO_ANNOTATE).filter(is_gold=False, excluded=False)
    if photos is not None:
        anns = anns.filter(photo__in=photos)
    rows = list(anns.values_list("pk", "photo_id", "annotator_id", "annotator__username"))
    by_photo: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for pk, photo_id, user_id, username in rows:
        by_photo[photo_id].append((pk, user_id, username))
    by_photo = {p: v for p, v in by_photo.items() if len(v) >= 2}
    boxes = _boxes_by_annotation(pk for v in by_photo.values() for pk, _, _ in v)
    per_photo, pair_acc = [], defaultdict(lambda: {"photos": 0, "f1": 0.0, "matches": 0, "label_agree": 0})
    names = {}
    for photo_id, anns_ in sorted(by_photo.items()):
        for (pa, ua, na), (pb, ub, nb) in combinations(sorted(anns_, key=lambda t: t[2]), 2):
            counted = _independent(boxes.get(pa, AnnBoxes()), boxes.get(pb, AnnBoxes()))
            if counted is None:
                continue
            names[ua], names[ub] = na, nb
            ag = photo_agreement(*counted, threshold)
            per_photo.append(
                {
                    "photo_id": photo_id,
                    "a": na,
                    "b": nb,
                    "ann_a": pa,
                    "ann_b": pb,
                    "n_a": ag.n_a,
                    "n_b": ag.n_b,
                    "matches": ag.matches,
                    "agreement": ag.f1,
                    "mean_iou": ag.mean_iou,
                    "label_agreement": ag.label_rate,
                    "low": ag.f1 < low or (ag.label_rate is not None and ag.label_rate < 1.0),
                }
            )
            acc = pair_acc[(na, nb)]
            acc["photos"] += 1
            acc["f1"] += ag.f1
            acc["matches"] += ag.matches
            acc["label_agree"] += ag.label_agree
    annotators = sorted(set(names.values()))
    matrix = {a: dict.fromkeys(annotators) for a in annotators}
    pairs = []
    for (a, b), acc in pair_acc.items():
        mean = acc["f1"] / acc["photos"]
        label = acc["label_agree"] / acc["matches"] if acc["matches"] else None
        cell = {"photos": acc["photos"], "agreement": mean, "label_agreement": label}
        matrix[a][b] = matrix[b][a] = cell
        pairs.append({"a": a, "b": b, **cell})
    low_rows = sorted([r for r in per_photo if r["low"]], key=lambda r: (r["agreement"], r["photo_id"]))
    return {
        "threshold": threshold,
        "low": low,
        "per_photo": per_photo,
        "pairs": pairs,
        "annotators": annotators,
        "matrix": matrix,
        "low_agreement": low_rows,
    }


def gold_scores(*, threshold: float = 0.5) -> list[dict]:
    """Each annotator scored on the gold photos against the reference boxes."""
    from .models import AnnotationStatus, PhotoAnnotation

    gold = {a.photo_id: a.pk for a in PhotoAnnotation.objects.filter(is_gold=True)}
    if not gold:
        return []
    theirs = list(
        PhotoAnnotation.objects.filter(photo_id__in=gold.keys(), is_gold=False)
        .exclude(status=AnnotationStatus.TO_ANNOTATE)
        .values_list("pk", "photo_id", "annotator__username")
    )
    boxes = _boxes_by_annotation(list(gold.values()) + [t[0] for t in theirs])
    scores: dict[str, Score] = defaultdict(Score)
    for pk, photo_id, username in theirs:
        ref, mine = boxes.get(gold[photo_id], AnnBoxes()), boxes.get(pk, AnnBoxes())
        if mine.borrowed and not mine.own:
            continue  # only took over boxes: nothing of their own to score
        score_against(ref.every, mine.own, scores[username], threshold)
    return [
        {
            "annotator": name,
            "photos": s.photos,
            "reference_boxes": s.reference,
            "boxes": s.predicted,
            "matched": s.tp,
            "precision": s.precision,
            "recall": s.recall,
            "mean_iou": s.mean_iou,
            "label_accuracy": s.label_accuracy,
        }
        for name, s in sorted(scores.items())
    ]
