"""Reader-study pages: set-up and results (coordinators, admins), reading (invited readers).

Readers see opaque per-study case numbers only, never case ids, labels, other readers' answers
or (in the unaided session) the model's output. Photos are streamed by a study-scoped view.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import cache_control

from annotation.views import _csv_text, stream_photo
from derm_portal import roles
from derm_portal.roles import require_role

from . import charts, model_outputs, questions, results, selectors, services
from .forms import CaseFilterForm, InviteForm, StudyForm
from .models import (
    ConfidenceScale,
    QuestionType,
    Reading,
    Session,
    StudyCase,
    StudyReader,
    StudyStatus,
)

COORD = roles.CAN_COORDINATE_STUDIES


# ------------------------------------------------------------------ coordinator pages
@require_role(*COORD)
def study_list(request):
    return render(request, "reports/study_list.html", {"studies": selectors.study_list(user=request.user)})


@require_role(*COORD)
def study_create(request):
    from annotation.selectors import taxonomy_default
    from derm_portal.idempotency import token_from

    taxonomy = taxonomy_default()
    form = StudyForm(request.POST or None, taxonomy=taxonomy)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            study = services.study_create(
                title=d["title"],
                description=d["description"],
                taxonomy=taxonomy,
                created_by=request.user,
                question_type=d["question_type"],
                class_level=d["class_level"],
                positive_codes=d["positive_codes"],
                question_text=d["question_text"],
                confidence_scale=d["confidence_scale"],
                model_version=d.get("model_version"),
                shuffle=d["shuffle"],
                allow_back=d["allow_back"],
                aided_session=d["aided_session"],
                show_history=d["show_history"],
                submission_token=token_from(request.POST),
            )
        except ValidationError as exc:
            form.add_error(None, "; ".join(exc.messages))
        else:
            messages.success(request, "Study created. Now add cases and invite readers.")
            return redirect("reports:study_detail", pk=study.pk)
    return render(request, "reports/study_form.html", {"form": form, "taxonomy": taxonomy})


def _study_initial(study) -> dict:
    return {
        f: getattr(study, f)
        for f in (
            "title",
            "description",
            "question_type",
            "class_level",
            "positive_codes",
            "question_text",
            "confidence_scale",
            "model_version",
            "shuffle",
            "allow_back",
            "aided_session",
            "show_history",
        )
    }


@require_role(*COORD)
def study_detail(request, pk: int):
    study = selectors.study_get(user=request.user, pk=pk)
    if request.method == "POST":
        return _study_action(request, study)
    tmap = questions.taxonomy_map(study.taxonomy)
    cases = list(study.study_cases.select_related("case", "truth_sub_class").order_by("number"))
    readers = list(StudyReader.objects.filter(study=study).select_related("user").order_by("invited_at"))
    n = len(cases)
    for sr in readers:
        sr.done_unaided = sr.readings.filter(session=Session.UNAIDED, answered_at__isnull=False).count()
        sr.done_aided = sr.readings.filter(session=Session.AIDED, answered_at__isnull=False).count()
    training_kind = model_outputs.training_case_ids(study.model_version)[0] if study.model_version_id else None
    planning = _planning(request, study)
    return render(
        request,
        "reports/study_detail.html",
        {
            "study": study,
            "question": questions.question_text(study, tmap),
            "classes": questions.classes(study, tmap),
            "cases": cases,
            "n_cases": n,
            "n_positive": sum(1 for c in cases if questions.truth_class(study, tmap, c.truth_sub_class.code) == "pos"),
            "readers": readers,
            "in_training": sum(1 for c in cases if c.in_training == "yes"),
            "possible_training": sum(1 for c in cases if c.in_training == "possible"),
            "unknown_training": sum(1 for c in cases if c.in_training == "unknown"),
            "training_kind": training_kind,
            "with_model": sum(1 for c in cases if c.model_probs),
            "problems": services.study_problems(study=study) if study.status == StudyStatus.DRAFT else [],
            "form": StudyForm(initial=_study_initial(study), taxonomy=study.taxonomy)
            if study.status == StudyStatus.DRAFT
            else None,
            "filter_form": CaseFilterForm(taxonomy=study.taxonomy, initial={"exclude_training": True}),
            "invite_form": InviteForm(study=study),
            "planning": planning,
        },
    )


def _planning(request, study) -> dict:
    """Readers and cases needed (Hillis-Obuchowski) for ?effect= (AUC difference) and ?power=, from
    this study's aided-vs-unaided readings when there are any, else the Van Dyke components."""
    from .mrmc import planning

    def num(name, default, lo, hi):
        try:
            v = float(request.GET.get(name, default))
        except ValueError:
            return default
        return v if lo < v < hi else default

    effect, power = num("effect", 0.05, 0.0, 0.5), num("power", 0.8, 0.5, 0.999)
    comp = planning.VAN_DYKE
    if study.status != StudyStatus.DRAFT and study.aided_session:
        res = results.reader_study_results(study=study)
        pilot = next((t.get("aided_vs_unaided") for t in res["aided_tasks"] if t.get("aided_vs_unaided")), None)
        if pilot:
            comp = planning.components_from(pilot, n_cases=res["n_cases_analysed"])
    return {
        "effect": effect,
        "power": power,
        "source": comp["source"],
        "rows": planning.table(comp, effect=effect, power=power),
    }


def _study_action(request, study):
    action = request.POST.get("action", "")
    back = redirect("reports:study_detail", pk=study.pk)
    try:
        if action == "update":
            form = StudyForm(request.POST, taxonomy=study.taxonomy)
            if not form.is_valid():
                for field, errs in form.errors.items():
                    messages.error(request, f"{field}: {' '.join(errs)}")
                return back
            d = form.cleaned_data
            fields = {k: d.get(k) for k in _study_initial(study) if k in d}
            services.study_update(study=study, **fields)
            messages.success(request, "Study saved.")
        elif action == "add_cases":
            form = CaseFilterForm(request.POST, taxonomy=study.taxonomy)
            if not form.is_valid():
                messages.error(request, "Check the case filters.")
                return back
            d = form.cleaned_data
            qs = selectors.study_candidate_cases(
                user=request.user,
                study=study,
                diagnosis=d["diagnosis"],
                modality=d["modality"],
                q=d["q"],
                exclude_training=d["exclude_training"],
            )
            matching = qs.count()
            if d["n"]:
                out = services.study_cases_sample(study=study, queryset=qs, n=d["n"])
            else:
                out = services.study_cases_add(study=study, cases=qs)
            messages.success(request, f"{out['added']} case(s) added.")
            if d["n"] and matching < d["n"]:
                why = (
                    " (cases the model was trained on, or that may have been, are left out)"
                    if d["exclude_training"] and study.model_version_id
                    else ""
                )
                messages.warning(
                    request, f"{d['n']} asked for, but only {matching} eligible case(s) match the filters{why}."
                )
            if out["skipped"]:
                messages.warning(
                    request,
                    f"{len(out['skipped'])} skipped: " + "; ".join(f"{r}: {why}" for r, why in out["skipped"][:10]),
                )
        elif action == "remove_case":
            sc = get_object_or_404(StudyCase, study=study, pk=request.POST.get("study_case"))
            services.study_case_remove(study=study, study_case=sc)
            messages.success(request, f"Case #{sc.number} removed.")
        elif action == "invite":
            form = InviteForm(request.POST, study=study)
            if not form.is_valid():
                messages.error(request, "Choose a reader and an experience level.")
                return back
            services.study_reader_invite(
                study=study, user=form.cleaned_data["user"], experience=form.cleaned_data["experience"], by=request.user
            )
            messages.success(request, "Reader invited.")
        elif action == "remove_reader":
            sr = get_object_or_404(StudyReader, study=study, pk=request.POST.get("study_reader"))
            services.study_reader_remove(study=study, study_reader=sr)
            messages.success(request, "Reader removed.")
        elif action == "refresh_model":
            from .tasks import enqueue_model_outputs

            enqueue_model_outputs(study_pk=study.pk)
            messages.success(
                request, "Model outputs are being collected (finished predictions, else the model artefact)."
            )
        elif action == "open":
            services.study_open(study=study, by=request.user)
            messages.success(request, "The study is open: invited readers see it under My readings.")
        elif action == "close":
            services.study_close(study=study, by=request.user)
            messages.success(request, "The study is closed.")
        else:
            messages.error(request, "Unknown action.")
    except ValidationError as exc:
        for m in exc.messages:
            messages.error(request, m)
    return back


def _analysis_options(request) -> tuple[str, float | None]:
    """?covariance=auto|delong|jackknife and ?margin=0.05 (non-inferiority margin, 0 < margin < 0.5)."""
    method = request.GET.get("covariance", "auto")
    if method not in results.METHODS:
        method = "auto"
    try:
        margin = float(request.GET.get("margin", ""))
    except ValueError:
        margin = None
    if margin is not None and not 0 < margin < 0.5:
        margin = None
    return method, (round(margin, 4) if margin is not None else None)


def _results_context(study, method: str = "auto", margin: float | None = None):
    res = results.reader_study_results(study=study, method=method, margin=margin)
    binary = study.question_type == QuestionType.BINARY
    aided_by_key = {t["key"]: t for t in res["aided_tasks"]}
    figures = []
    for i, t in enumerate(res["tasks"]):
        title = charts.task_title(t, binary)
        figures.append(
            {
                "task": t,
                "title": title,
                "id": f"roc-figure-{i}",
                "figure": charts.plotly_figure(t, aided_task=aided_by_key.get(t["key"])),
                "aided": aided_by_key.get(t["key"]),
            }
        )
    return res, figures


@require_role(*COORD)
def study_results(request, pk: int):
    study = selectors.study_get(user=request.user, pk=pk)
    method, margin = _analysis_options(request)
    res, figures = _results_context(study, method, margin)
    return render(
        request,
        "reports/study_results.html",
        {
            "study": study,
            "res": res,
            "figures": figures,
            "binary": study.question_type == QuestionType.BINARY,
            "method_choice": method,
            "margin": margin,
            "methods": results.METHODS,
            "has_confidence": study.confidence_scale != ConfidenceScale.NONE,
        },
    )


@require_role(*COORD)
def study_readings_csv(request, pk: int):
    study = selectors.study_get(user=request.user, pk=pk)
    tmap = questions.taxonomy_map(study.taxonomy)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(
        [
            "study_id",
            "reader",
            "experience",
            "session",
            "case_number",
            "case_reference",
            "truth_sub_class",
            "truth_answer",
            "answer",
            "correct",
            "confidence",
            "served_at",
            "answered_at",
            "server_seconds",
            "active_seconds",
            "revisions",
            "comment",
        ]
    )
    for r in selectors.readings_for_export(study=study).iterator(chunk_size=2000):
        truth = questions.truth_class(study, tmap, r.study_case.truth_sub_class.code)
        # every cell a user typed (names, references, taxonomy codes, answers, comments) is formula-escaped
        w.writerow(
            [
                study.pk,
                _csv_text(r.study_reader.user.get_username()),
                r.study_reader.experience,
                r.session,
                r.study_case.number,
                _csv_text(r.study_case.case.reference),
                _csv_text(r.study_case.truth_sub_class.code),
                _csv_text(truth or ""),
                _csv_text(r.answer),
                "" if not r.answer else int(r.answer == truth),
                "" if r.confidence is None else r.confidence,
                r.served_at.isoformat(),
                r.answered_at.isoformat() if r.answered_at else "",
                "" if r.server_ms is None else round(r.server_ms / 1000, 2),
                "" if r.active_ms is None else round(r.active_ms / 1000, 2),
                r.revisions,
                _csv_text(r.comment),
            ]
        )
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="reader-study-{study.pk}-readings.csv"'
    return response


@require_role(*COORD)
def study_chart(request, pk: int, key: str, fmt: str):
    study = selectors.study_get(user=request.user, pk=pk)
    if fmt not in ("png", "svg"):
        raise Http404()
    res = results.reader_study_results(study=study)
    task = next((t for t in res["tasks"] if t["key"] == key), None)
    if task is None:
        raise Http404("No such chart.")
    aided = next((t for t in res["aided_tasks"] if t["key"] == key), None)
    data = charts.render_matplotlib(
        task, aided_task=aided, title=charts.task_title(task, study.question_type == QuestionType.BINARY), fmt=fmt
    )
    response = HttpResponse(data, content_type="image/png" if fmt == "png" else "image/svg+xml")
    response["Content-Disposition"] = f'attachment; filename="reader-study-{study.pk}-roc-{key}.{fmt}"'
    return response


@require_role(*COORD)
def study_report_pdf(request, pk: int):
    from .pdf import study_report_pdf as build

    study = selectors.study_get(user=request.user, pk=pk)
    data = build(study=study, res=results.reader_study_results(study=study))
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="reader-study-{study.pk}-report.pdf"'
    return response


@lru_cache(maxsize=1)
def _plotly_bundle() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


@cache_control(max_age=86400, private=True)
def plotly_js(request):
    """plotly.js from the installed plotly package (no CDN: hospital networks are often closed)."""
    return HttpResponse(_plotly_bundle(), content_type="application/javascript")


# ------------------------------------------------------------------ reader pages
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
