"""Reads for reader studies, scoped to the user: coordinators see studies, readers see their
own invitations and nothing of the truth, of other readers or (unaided) of the model."""

from __future__ import annotations

from django.db.models import Count, F, Func, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404

from derm_portal import roles

from .models import ReaderStudy, Reading, StudyCase, StudyReader, StudyStatus


def studies_visible_to(user) -> QuerySet[ReaderStudy]:
    if roles.has_role(user, roles.CAN_COORDINATE_STUDIES):
        return ReaderStudy.objects.all()
    return ReaderStudy.objects.none()


def study_list(*, user) -> QuerySet[ReaderStudy]:
    return (
        studies_visible_to(user)
        .select_related("taxonomy", "model_version", "created_by")
        .annotate(
            n_cases=Count("study_cases", distinct=True),
            n_readers=Count("readers", distinct=True),
        )
    )


def study_get(*, user, pk: int) -> ReaderStudy:
    try:
        return studies_visible_to(user).select_related("taxonomy", "model_version").get(pk=pk)
    except ReaderStudy.DoesNotExist:
        raise Http404("No such study, or you may not see it.")


def invitations_for(*, user) -> QuerySet[StudyReader]:
    """The reader's own invitations to open or closed studies (drafts stay hidden)."""
    if not roles.has_role(user, roles.READER):
        return StudyReader.objects.none()
    return (
        StudyReader.objects.filter(user=user, study__status__in=[StudyStatus.OPEN, StudyStatus.CLOSED])
        .select_related("study")
        .annotate(
            # subqueries: counting both joins in one query multiplied readings by cases
            n_answered=_count(
                Reading.objects.filter(study_reader=OuterRef("pk"), answered_at__isnull=False, session="unaided")
            ),
            n_answered_aided=_count(
                Reading.objects.filter(study_reader=OuterRef("pk"), answered_at__isnull=False, session="aided")
            ),
            n_cases=_count(StudyCase.objects.filter(study=OuterRef("study_id"))),
        )
    )


def _count(qs):
    """COUNT(*) of a correlated queryset as a scalar subquery (Func, so Django adds no GROUP BY)."""
    return Coalesce(Subquery(qs.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")[:1]), 0)


def invitation_get(*, user, study_pk: int) -> StudyReader:
    try:
        return StudyReader.objects.select_related("study", "study__taxonomy").get(
            user=user, study_id=study_pk, study__status__in=[StudyStatus.OPEN, StudyStatus.CLOSED]
        )
    except StudyReader.DoesNotExist:
        raise Http404("No such study, or you are not invited.")


def invitation_study_case(*, study_reader: StudyReader, number: int) -> StudyCase:
    try:
        return StudyCase.objects.select_related("case").get(study_id=study_reader.study_id, number=number)
    except StudyCase.DoesNotExist:
        raise Http404("No such case in this study.")


def reading_counts(*, study_reader: StudyReader, session: str) -> tuple[int, int]:
    total = StudyCase.objects.filter(study_id=study_reader.study_id).count()
    done = Reading.objects.filter(study_reader=study_reader, session=session, answered_at__isnull=False).count()
    return done, total


def readings_for_export(*, study: ReaderStudy) -> QuerySet[Reading]:
    return (
        Reading.objects.filter(study_reader__study=study)
        .select_related("study_reader__user", "study_case__case", "study_case__truth_sub_class")
        .order_by("study_reader__invited_at", "study_reader_id", "session", "study_case__number")
    )


def own_readings(*, user) -> QuerySet[Reading]:
    """A reader's own answers (never the truth, never other readers')."""
    return (
        Reading.objects.filter(study_reader__user=user, answered_at__isnull=False)
        .select_related("study_case", "study_reader")
        .order_by("study_reader__study_id", "session", "study_case__number")
    )


def study_candidate_cases(
    *, user, study: ReaderStudy, diagnosis=(), modality: str = "", q: str = "", exclude_training: bool = True
):
    """Histopathology-confirmed, not excluded cases with photos, not yet in the study, filtered."""
    from django.db.models import Exists, OuterRef

    from annotation.models import CaseStatus, DiagnosisLabel, Photo
    from annotation.selectors import cases_visible_to

    confirmed = DiagnosisLabel.objects.filter(case=OuterRef("pk"), confirmed=True, sub_class__taxonomy=study.taxonomy)
    if diagnosis:
        confirmed = confirmed.filter(sub_class__code__in=list(diagnosis))
    qs = (
        cases_visible_to(user)
        .exclude(status=CaseStatus.EXCLUDED)
        .filter(Exists(confirmed))
        .filter(Exists(Photo.objects.filter(case=OuterRef("pk"))))
        .exclude(pk__in=StudyCase.objects.filter(study=study).values("case_id"))
    )
    if modality:
        qs = qs.filter(Exists(Photo.objects.filter(case=OuterRef("pk"), modality=modality)))
    if q:
        qs = qs.filter(Q(external_id__icontains=q) | Q(body_site__icontains=q))
    if exclude_training and study.model_version_id:
        from .model_outputs import training_case_ids

        kind, ids = training_case_ids(study.model_version)
        if kind == "train":
            qs = qs.exclude(external_id__in=ids)
        elif kind == "test":  # held-out cases, cases of unknown origin, and cases created after the model
            qs = qs.filter(
                Q(external_id="") | Q(external_id__in=ids) | Q(created_at__gt=study.model_version.created_at)
            )
    return qs.order_by("pk")
