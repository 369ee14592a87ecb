"""Reader-study pages for invited readers: their studies, blinded reading, study-scoped photos.

Readers see opaque per-study case numbers only, never case ids, labels, other readers' answers
or (in the unaided session) the model's output. Photos are streamed by a study-scoped view.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render

from annotation.views import stream_photo
from derm_portal import roles
from derm_portal.roles import require_role

from . import questions, selectors, services
from .models import (
    QuestionType,
    Reading,
    Session,
    StudyCase,
    StudyStatus,
)


@require_role(roles.READER)
def my_studies(request):
    invitations = list(selectors.invitations_for(user=request.user))
    for inv in invitations:
        inv.session_now = services.reader_session(inv) if inv.study.status == StudyStatus.OPEN else None
        total = inv.n_cases * (2 if inv.study.aided_session else 1)
        inv.percent = round(100 * (inv.n_answered + inv.n_answered_aided) / total) if total else 0
    return render(request, "reports/reading_list.html", {"invitations": invitations})


@require_role(roles.READER)
def reading_start(request, study_pk: int):
    inv = selectors.invitation_get(user=request.user, study_pk=study_pk)
    session = services.reader_session(inv)
    if inv.study.status != StudyStatus.OPEN or session is None:
        messages.info(request, "Nothing left to read in this study. Thank you!")
        return redirect("reports:my_studies")
    number = services.reading_next_number(study_reader=inv, session=session)
    if number is None:  # all answered but not marked (e.g. a case was added): mark via the list
        return redirect("reports:my_studies")
    return redirect("reports:reading_case", study_pk=study_pk, session=session, number=number)


def _model_view(study, tmap, sc) -> dict | None:
    """The model's differential as the aided session shows it."""
    probs = sc.model_probs or {}
    if not probs:
        return None
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:5]
    out = {
        "ranked": [
            {"code": c, "name": tmap.names.get(c, c), "meta": tmap.names.get(tmap.sub_meta.get(c, ""), ""), "p": p}
            for c, p in ranked
        ]
    }
    scores = questions.model_class_scores(study, tmap, probs)
    if study.question_type == QuestionType.BINARY:
        out["headline"] = f"P({questions.positive_label(study, tmap)}) = {scores['pos']:.0%}"
    elif study.question_type == QuestionType.GRADE:
        out["headline"] = ", ".join(f"{questions.GRADE_LABELS[k]} {v:.0%}" for k, v in scores.items())
    else:
        best = max(scores, key=scores.get)
        out["headline"] = f"Most likely: {tmap.names.get(best, best)} ({scores[best]:.0%})"
    return out


@require_role(roles.READER)
def reading_case(request, study_pk: int, session: str, number: int):
    inv = selectors.invitation_get(user=request.user, study_pk=study_pk)
    study = inv.study
    if session not in Session.values:
        raise Http404()
    current = services.reader_session(inv)
    if study.status != StudyStatus.OPEN or current is None:
        return redirect("reports:my_studies")
    if session != current:
        return redirect("reports:reading_start", study_pk=study_pk)
    sc = selectors.invitation_study_case(study_reader=inv, number=number)
    order = services.reader_order(inv)
    answered = {
        r.study_case_id: r for r in Reading.objects.filter(study_reader=inv, session=session, answered_at__isnull=False)
    }
    position = order.index(sc.pk)
    next_pk = next((pk for pk in order if pk not in answered), None)
    if sc.pk in answered and not study.allow_back:
        return redirect("reports:reading_start", study_pk=study_pk)
    if sc.pk not in answered and sc.pk != next_pk:
        return redirect("reports:reading_start", study_pk=study_pk)  # no skipping ahead
    tmap = questions.taxonomy_map(study.taxonomy)
    error = ""
    if request.method == "POST":
        try:
            services.reading_submit(
                study_reader=inv,
                study_case=sc,
                session=session,
                answer=request.POST.get("answer", ""),
                confidence=request.POST.get("confidence") or None,
                active_ms=request.POST.get("active_ms") or None,
                comment=request.POST.get("comment", ""),
                tmap=tmap,
            )
        except ValidationError as exc:
            error = "; ".join(exc.messages)
        else:
            if request.POST.get("stop"):
                messages.success(request, "Answer saved. You can resume any time.")
                return redirect("reports:my_studies")
            return redirect("reports:reading_start", study_pk=study_pk)
    services.reading_serve(study_reader=inv, study_case=sc, session=session)
    previous = answered.get(sc.pk)
    prev_pk = order[position - 1] if position > 0 else None
    prev_number = None
    if study.allow_back and prev_pk in answered:
        prev_number = StudyCase.objects.values_list("number", flat=True).get(pk=prev_pk)
    done = len(answered)
    total = len(order)
    photos = list(sc.case.photos.order_by("created_at", "id").values_list("modality", flat=True))
    bounds = questions.confidence_bounds(study.confidence_scale)
    return render(
        request,
        "reports/reading_case.html",
        {
            "study": study,
            "inv": inv,
            "session": session,
            "aided": session == Session.AIDED,
            "sc": sc,
            "number": number,
            "position": position + 1,
            "total": total,
            "done": done,
            "percent": round(100 * done / total) if total else 0,
            "photos": [{"idx": i, "modality": m} for i, m in enumerate(photos)],
            "question": questions.question_text(study, tmap),
            "choices": questions.classes(study, tmap),
            "scale": study.confidence_scale,
            "bounds": bounds,
            "previous": previous,
            "prev_number": prev_number,
            "model": _model_view(study, tmap, sc) if session == Session.AIDED else None,
            "history": {"age": sc.case.age_at_visit, "site": sc.case.body_site, "text": sc.case.clinical_history}
            if study.show_history
            else None,
            "error": error,
            "posted": request.POST if error else None,
            "session_label": dict(Session.choices)[session],
        },
    )


@require_role(roles.READER)
def reading_photo(request, study_pk: int, number: int, idx: int):
    """A study photo for an invited reader of an open study: addressed by the opaque case number and
    the photo's index within the case, streamed after the check (readers cannot use photo_file)."""
    inv = selectors.invitation_get(user=request.user, study_pk=study_pk)
    session = services.reader_session(inv)
    if inv.study.status != StudyStatus.OPEN or session is None:
        raise PermissionDenied("This study is not open for you.")
    sc = selectors.invitation_study_case(study_reader=inv, number=number)
    # as reading_case: the case being read, or (with allow_back) one already answered; never ahead
    answered = set(
        Reading.objects.filter(study_reader=inv, session=session, answered_at__isnull=False).values_list(
            "study_case_id", flat=True
        )
    )
    current = next((pk for pk in services.reader_order(inv) if pk not in answered), None)
    if sc.pk != current and not (sc.pk in answered and inv.study.allow_back):
        raise PermissionDenied("This case is not open for you yet.")
    photos = list(sc.case.photos.order_by("created_at", "id"))
    if not 0 <= idx < len(photos):
        raise Http404("No such photo.")
    response = stream_photo(photos[idx], request.GET.get("w"))
    response["Content-Disposition"] = f'inline; filename="study-{study_pk}-case-{number}-{idx + 1}.jpg"'
    return response
