"""A reader study's readings as arrays: truth, model scores, each reader's answers per session."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import questions
from .models import (
    ReaderStudy,
    Reading,
    Session,
    StudyCase,
    StudyReader,
)


@dataclass
class StudyData:
    study: ReaderStudy
    tmap: questions.TaxonomyMap
    class_codes: list[str]
    class_labels: list[str]
    numbers: np.ndarray  # (N,) opaque case numbers
    truth: np.ndarray  # (N,) class index
    model: np.ndarray | None  # (N, C) model class scores, None when missing for any case
    model_missing: int
    readers: list[dict]  # id, name, experience
    answers: dict[str, np.ndarray]  # session -> (J, N) class index, -1 = not answered
    confidence: dict[str, np.ndarray]  # session -> (J, N) float, nan = none
    server_ms: dict[str, np.ndarray]
    active_ms: dict[str, np.ndarray]


def load_study_data(study: ReaderStudy) -> StudyData:
    tmap = questions.taxonomy_map(study.taxonomy)
    cls = questions.classes(study, tmap)
    codes = [c for c, _ in cls]
    index = {c: i for i, c in enumerate(codes)}
    rows = list(
        StudyCase.objects.filter(study=study)
        .order_by("number")
        .values_list("pk", "number", "truth_sub_class_id", "model_probs")
    )
    col = {pk: i for i, (pk, _, _, _) in enumerate(rows)}
    N, C = len(rows), len(codes)
    truth = np.array(
        [index.get(questions.truth_class(study, tmap, tmap.sub_pk.get(s, "")), -1) for _, _, s, _ in rows], dtype=int
    )
    model = None
    missing = sum(1 for r in rows if not r[3])
    if study.model_version_id and N and missing == 0:
        model = np.zeros((N, C))
        for i, (_, _, _, probs) in enumerate(rows):
            sc = questions.model_class_scores(study, tmap, probs)
            model[i] = [sc.get(c, 0.0) for c in codes]
    readers = []
    rindex = {}
    for sr in StudyReader.objects.filter(study=study).select_related("user").order_by("invited_at", "pk"):
        rindex[sr.pk] = len(readers)
        readers.append(
            {
                "id": sr.pk,
                "user_id": sr.user_id,
                "name": sr.user.get_full_name() or sr.user.get_username(),
                "username": sr.user.get_username(),
                "experience": sr.experience,
            }
        )
    J = len(readers)
    answers = {s: np.full((J, N), -1, dtype=int) for s in Session.values}
    conf = {s: np.full((J, N), np.nan) for s in Session.values}
    server = {s: np.full((J, N), np.nan) for s in Session.values}
    active = {s: np.full((J, N), np.nan) for s in Session.values}
    for sr_id, sc_id, session, answer, c, sms, ams in (
        Reading.objects.filter(study_reader__study=study, answered_at__isnull=False)
        .values_list("study_reader_id", "study_case_id", "session", "answer", "confidence", "server_ms", "active_ms")
        .iterator(chunk_size=5000)
    ):
        j, i = rindex.get(sr_id), col.get(sc_id)
        if j is None or i is None or answer not in index:
            continue
        answers[session][j, i] = index[answer]
        if c is not None:
            conf[session][j, i] = c
        if sms is not None:
            server[session][j, i] = sms
        if ams is not None:
            active[session][j, i] = ams
    return StudyData(
        study,
        tmap,
        codes,
        [lbl for _, lbl in cls],
        np.array([r[1] for r in rows]),
        truth,
        model,
        missing,
        readers,
        answers,
        conf,
        server,
        active,
    )
