"""Writes for reader studies: set-up, invitations, opening/closing, readings. The compared model's
outputs and training overlap: ``model_outputs`` (re-exported here)."""

from __future__ import annotations

import logging
import random
import secrets

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from derm_portal import roles

from . import questions
from .model_outputs import study_model_outputs_refresh, study_training_overlap  # noqa: F401 (callers use services.*)
from .models import (
    ClassLevel,
    ConfidenceScale,
    Experience,
    QuestionType,
    ReaderStudy,
    Reading,
    Session,
    StudyCase,
    StudyReader,
    StudyStatus,
)

log = logging.getLogger(__name__)


def _require_draft(study: ReaderStudy, what: str) -> None:
    if study.status != StudyStatus.DRAFT:
        raise ValidationError(f"{what} is only possible while the study is a draft.")


# ------------------------------------------------------------------ set-up
def _validate_question(*, taxonomy, question_type, class_level, positive_codes, model_version) -> list[str]:
    from annotation.models import SubClass

    codes = set(SubClass.objects.filter(taxonomy=taxonomy).values_list("code", flat=True))
    if question_type not in QuestionType.values:
        raise ValidationError(f"Unknown question type {question_type!r}.")
    if class_level not in ClassLevel.values:
        raise ValidationError(f"Unknown class level {class_level!r}.")
    positive = sorted(set(positive_codes or []))
    if question_type == QuestionType.BINARY:
        unknown = set(positive) - codes
        if not positive:
            raise ValidationError("A binary question needs at least one positive sub-class.")
        if unknown:
            raise ValidationError(f"Not in the taxonomy: {', '.join(sorted(unknown))}.")
        if set(positive) == codes:
            raise ValidationError("Every sub-class is positive: nothing would be negative.")
    else:
        positive = []
    if model_version is not None and model_version.taxonomy_id != taxonomy.pk:
        raise ValidationError("The compared model was trained on another taxonomy version.")
    return positive


@transaction.atomic
def study_create(
    *,
    title: str,
    taxonomy,
    created_by,
    question_type: str = QuestionType.BINARY,
    class_level: str = ClassLevel.SUB,
    positive_codes=(),
    question_text: str = "",
    confidence_scale: str = ConfidenceScale.NONE,
    model_version=None,
    shuffle: bool = True,
    allow_back: bool = False,
    aided_session: bool = False,
    show_history: bool = False,
    description: str = "",
    submission_token: str = "",
) -> ReaderStudy:
    """A new study; a repeated submission of one form (same ``submission_token``) returns the first's study."""
    from derm_portal.idempotency import once

    if not title.strip():
        raise ValidationError("A study needs a title.")
    if confidence_scale not in ConfidenceScale.values:
        raise ValidationError(f"Unknown confidence scale {confidence_scale!r}.")
    positive = _validate_question(
        taxonomy=taxonomy,
        question_type=question_type,
        class_level=class_level,
        positive_codes=positive_codes,
        model_version=model_version,
    )
    if aided_session and model_version is None:
        raise ValidationError("An AI-aided session needs a compared model.")
    return once(
        user=created_by,
        kind="study",
        token=submission_token,
        fetch=lambda pk: ReaderStudy.objects.get(pk=pk),
        create=lambda: ReaderStudy.objects.create(
            title=title.strip(),
            description=description,
            taxonomy=taxonomy,
            question_type=question_type,
            class_level=class_level,
            positive_codes=positive,
            question_text=question_text.strip(),
            confidence_scale=confidence_scale,
            model_version=model_version,
            shuffle=shuffle,
            allow_back=allow_back,
            aided_session=aided_session,
            show_history=show_history,
            created_by=created_by,
            seed=secrets.randbelow(2**31),
        ),
    )[0]


@transaction.atomic
def study_update(*, study: ReaderStudy, **fields) -> ReaderStudy:
    """Change the question or options of a draft study."""
    _require_draft(study, "Changing the question")
    allowed = set(ReaderStudy.SETTINGS)
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    for k, v in fields.items():
        setattr(study, k, v)
    study.positive_codes = _validate_question(
        taxonomy=study.taxonomy,
        question_type=study.question_type,
        class_level=study.class_level,
        positive_codes=study.positive_codes,
        model_version=study.model_version,
    )
    if study.aided_session and study.model_version is None:
        raise ValidationError("An AI-aided session needs a compared model.")
    study.results_version += 1
    study.save()
    if "model_version" in fields:
        study.study_cases.update(model_probs=None, model_source="", in_training="unknown")
    if {"question_type", "class_level", "positive_codes"} & set(fields):
        # cases whose truth no longer fits the question (e.g. no grade) are reported by study_problems
        pass
    return study


def case_truth(case, taxonomy):
    """The confirmed (histopathology) label of a case in the study taxonomy, or None."""
    label = case.labels.filter(confirmed=True, sub_class__taxonomy=taxonomy).select_related("sub_class").first()
    return label.sub_class if label else None


@transaction.atomic
def study_cases_add(*, study: ReaderStudy, cases) -> dict:
    """Add confirmed cases (each gets a random opaque number). Returns added and skipped (with reasons)."""
    from annotation.models import CaseStatus, DiagnosisLabel, Photo

    _require_draft(study, "Changing the cases")
    cases = list(cases)
    truths = dict(
        DiagnosisLabel.objects.filter(
            case__in=[c.pk for c in cases], confirmed=True, sub_class__taxonomy=study.taxonomy
        ).values_list("case_id", "sub_class_id")
    )
    tmap = questions.taxonomy_map(study.taxonomy)
    present = set(study.study_cases.values_list("case_id", flat=True))
    with_photos = set(Photo.objects.filter(case__in=[c.pk for c in cases]).values_list("case_id", flat=True))
    taken = set(study.study_cases.values_list("number", flat=True))
    rng = random.Random(study.seed + len(taken))
    added, skipped = [], []
    for case in cases:
        if case.pk in present:
            skipped.append((case.reference, "already in the study"))
            continue
        if case.status == CaseStatus.EXCLUDED:
            skipped.append((case.reference, "excluded case"))
            continue
        sub_pk = truths.get(case.pk)
        if sub_pk is None:
            skipped.append((case.reference, "no histopathology-confirmed label"))
            continue
        if case.pk not in with_photos:
            skipped.append((case.reference, "no photo"))
            continue
        if questions.truth_class(study, tmap, tmap.sub_pk[sub_pk]) is None:
            skipped.append((case.reference, "diagnosis has no malignancy grade"))
            continue
        added.append((case, sub_pk))
        present.add(case.pk)
    # opaque numbers: a random permutation of free numbers 1..N+len(added)
    total = len(taken) + len(added)
    free = [n for n in range(1, total + 1) if n not in taken]
    while len(free) < len(added):
        total += 1
        if total not in taken:
            free.append(total)
    rng.shuffle(free)
    StudyCase.objects.bulk_create(
        [
            StudyCase(study=study, case=case, truth_sub_class_id=sub_pk, number=free[i])
            for i, (case, sub_pk) in enumerate(added)
        ]
    )
    study.results_changed()
    if study.model_version_id:
        study_training_overlap(study=study)
    return {"added": len(added), "skipped": skipped}


def study_cases_sample(*, study: ReaderStudy, queryset, n: int, seed: int | None = None) -> dict:
    """Random sample of `n` eligible cases out of `queryset` (a filtered case queryset)."""
    ids = list(queryset.values_list("pk", flat=True))
    rng = random.Random(seed if seed is not None else study.seed)
    rng.shuffle(ids)
    from annotation.models import Case

    chosen = ids[: max(0, int(n))]
    return study_cases_add(study=study, cases=Case.objects.filter(pk__in=chosen))


@transaction.atomic
def study_case_remove(*, study: ReaderStudy, study_case: StudyCase) -> None:
    _require_draft(study, "Changing the cases")
    if study_case.study_id != study.pk:
        raise ValidationError("That case is not in this study.")
    study_case.delete()
    study.results_changed()


@transaction.atomic
def study_reader_invite(*, study: ReaderStudy, user, experience: str, by) -> StudyReader:
    if study.status == StudyStatus.CLOSED:
        raise ValidationError("The study is closed.")
    if experience not in Experience.values:
        raise ValidationError(f"Unknown experience level {experience!r}.")
    if not roles.has_role(user, roles.READER):
        raise ValidationError(f"{user.get_username()} does not have the reader role.")
    try:
        with transaction.atomic():
            return StudyReader.objects.create(
                study=study, user=user, experience=experience, invited_by=by, seed=secrets.randbelow(2**31)
            )
    except IntegrityError:
        raise ValidationError(f"{user.get_username()} is already invited.")


@transaction.atomic
def study_reader_remove(*, study: ReaderStudy, study_reader: StudyReader) -> None:
    if study_reader.study_id != study.pk:
        raise ValidationError("That reader is not in this study.")
    if study_reader.readings.exists() and study.status != StudyStatus.DRAFT:
        raise ValidationError("This reader has already read cases; close the study instead.")
    study_reader.delete()
    study.results_changed()


def study_problems(*, study: ReaderStudy) -> list[str]:
    """What prevents opening the study (empty list: it can open)."""
    problems = []
    n = study.study_cases.count()
    if n == 0:
        problems.append("Add cases.")
    if not study.readers.exists():
        problems.append("Invite at least one reader.")
    if study.aided_session:
        if study.model_version is None:
            problems.append("The AI-aided session needs a compared model.")
        else:
            no_out = study.study_cases.filter(model_probs__isnull=True).count()
            if no_out:
                problems.append(
                    f"The AI-aided session needs the model's differential for every case; {no_out} of {n} have none "
                    "yet. Collect model outputs or switch the aided session off."
                )
    if study.question_type == QuestionType.BINARY and n:
        pos = study.study_cases.filter(truth_sub_class__code__in=study.positive_codes).count()
        if pos == 0 or pos == n:
            problems.append("The cases need both positives and negatives for ROC analysis.")
    return problems


@transaction.atomic
def study_open(*, study: ReaderStudy, by) -> ReaderStudy:
    given, study = study, ReaderStudy.objects.select_for_update().get(pk=study.pk)
    if study.status != StudyStatus.DRAFT:
        raise ValidationError("Only a draft study can be opened.")
    problems = study_problems(study=study)
    if problems:
        raise ValidationError(problems)
    study.status = given.status = StudyStatus.OPEN
    study.opened_at = given.opened_at = timezone.now()
    study.save(update_fields=["status", "opened_at"])
    return study


@transaction.atomic
def study_close(*, study: ReaderStudy, by) -> ReaderStudy:
    given, study = study, ReaderStudy.objects.select_for_update().get(pk=study.pk)
    if study.status != StudyStatus.OPEN:
        raise ValidationError("Only an open study can be closed.")
    study.status = given.status = StudyStatus.CLOSED
    study.closed_at = given.closed_at = timezone.now()
    study.save(update_fields=["status", "closed_at"])
    return study


# ------------------------------------------------------------------ reading
def reader_order(study_reader: StudyReader) -> list[int]:
    """The reader's case order (StudyCase pks): shuffled with the reader's seed when the study says so."""
    rows = list(
        StudyCase.objects.filter(study_id=study_reader.study_id).order_by("number").values_list("pk", flat=True)
    )
    if study_reader.study.shuffle:
        random.Random(f"{study_reader.study.seed}:{study_reader.seed}").shuffle(rows)
    return rows


def reader_session(study_reader: StudyReader) -> str | None:
    """The session the reader is in now: unaided, then aided (if the study has one), then None (done)."""
    if study_reader.unaided_done_at is None:
        return Session.UNAIDED
    if study_reader.study.aided_session and study_reader.aided_done_at is None:
        return Session.AIDED
    return None


def _check_can_read(study_reader: StudyReader, session: str) -> None:
    status = ReaderStudy.objects.values_list("status", flat=True).get(pk=study_reader.study_id)  # never a stale copy
    if status != StudyStatus.OPEN:
        raise PermissionDenied("This study is not open for reading.")
    current = reader_session(study_reader)
    if current is None:
        raise PermissionDenied("You have finished this study.")
    if session != current:
        raise PermissionDenied("That session is not open for you now.")


def reading_serve(*, study_reader: StudyReader, study_case: StudyCase, session: str) -> Reading:
    """Record that the case was shown (the server-side clock of the reading time starts here)."""
    _check_can_read(study_reader, session)
    now = timezone.now()
    reading, created = Reading.objects.get_or_create(
        study_reader=study_reader,
        study_case=study_case,
        session=session,
        defaults={"served_at": now},
    )
    if not created:
        Reading.objects.filter(pk=reading.pk).update(served_at=now)
        reading.served_at = now
    return reading


def validate_answer(study: ReaderStudy, tmap, answer: str, confidence) -> float | None:
    codes = {c for c, _ in questions.classes(study, tmap)}
    if answer not in codes:
        raise ValidationError("Choose one of the answers.")
    bounds = questions.confidence_bounds(study.confidence_scale)
    if bounds is None:
        return None
    if confidence in (None, ""):
        raise ValidationError("Give your confidence.")
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise ValidationError("Confidence must be a number.")
    if not bounds[0] <= value <= bounds[1]:
        raise ValidationError(f"Confidence must be between {bounds[0]:g} and {bounds[1]:g}.")
    if study.confidence_scale == ConfidenceScale.FIVE and value != int(value):
        raise ValidationError("Confidence must be a whole number from 1 to 5.")
    return value


@transaction.atomic
def reading_submit(
    *,
    study_reader: StudyReader,
    study_case: StudyCase,
    session: str,
    answer: str,
    confidence=None,
    active_ms: int | None = None,
    comment: str = "",
    tmap=None,
) -> Reading:
    study_reader = StudyReader.objects.select_for_update().select_related("study").get(pk=study_reader.pk)
    study = study_reader.study
    _check_can_read(study_reader, session)
    if study_case.study_id != study.pk:
        raise PermissionDenied("That case is not in this study.")
    value = validate_answer(study, tmap or questions.taxonomy_map(study.taxonomy), answer, confidence)
    now = timezone.now()
    try:
        reading = Reading.objects.select_for_update().get(
            study_reader=study_reader, study_case=study_case, session=session
        )
    except Reading.DoesNotExist:
        raise PermissionDenied("Open the case before answering it.")
    if reading.answered_at is not None and not study.allow_back:
        raise PermissionDenied("This study does not allow changing answers.")
    # time since the case was served, or since the last answer when re-submitted without re-serving
    since = max(reading.served_at, reading.answered_at) if reading.answered_at else reading.served_at
    elapsed = max(0, int((now - since).total_seconds() * 1000))
    reading.server_ms = (reading.server_ms or 0) + elapsed
    if active_ms is not None:
        try:
            a = max(0, int(active_ms))
        except (TypeError, ValueError):
            a = 0
        reading.active_ms = (reading.active_ms or 0) + min(
            a, elapsed + 5000
        )  # the client cannot claim more than it had
    if reading.answered_at is not None:
        reading.revisions += 1
    reading.answer = answer
    reading.confidence = value
    reading.comment = (comment or "")[:500]
    reading.answered_at = now  # served_at keeps when the case was served
    reading.save()
    total = StudyCase.objects.filter(study=study).count()
    done = Reading.objects.filter(study_reader=study_reader, session=session, answered_at__isnull=False).count()
    if done >= total:
        if session == Session.UNAIDED:
            study_reader.unaided_done_at = now
        else:
            study_reader.aided_done_at = now
        study_reader.save(update_fields=["unaided_done_at", "aided_done_at"])
    study.results_changed()
    return reading


def reading_next_number(*, study_reader: StudyReader, session: str) -> int | None:
    """The opaque number of the first unanswered case in the reader's order, None when all are answered."""
    order = reader_order(study_reader)
    answered = set(
        Reading.objects.filter(study_reader=study_reader, session=session, answered_at__isnull=False).values_list(
            "study_case_id", flat=True
        )
    )
    for pk in order:
        if pk not in answered:
            return StudyCase.objects.values_list("number", flat=True).get(pk=pk)
    return None


def max_number(study: ReaderStudy) -> int:
    return study.study_cases.aggregate(m=Max("number"))["m"] or 0
