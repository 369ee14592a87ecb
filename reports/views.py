"""Reader-study pages: set-up and results (coordinators, admins), reading (invited readers).

Readers see opaque per-study case numbers only, never case ids, labels, other readers' answers
or (in the unaided session) the model's output. Photos are streamed by a study-scoped view.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import cache_control

from derm_portal import roles
from derm_portal.csvsafe import spreadsheet_safe
from derm_portal.roles import require_role

from . import charts, model_outputs, questions, results, selectors, services
from .forms import CaseFilterForm, InviteForm, StudyForm
from .models import (
    ConfidenceScale,
    QuestionType,
    ReaderStudy,
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
    return {f: getattr(study, f) for f in ReaderStudy.SETTINGS}


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
                spreadsheet_safe(r.study_reader.user.get_username()),
                r.study_reader.experience,
                r.session,
                r.study_case.number,
                spreadsheet_safe(r.study_case.case.reference),
                spreadsheet_safe(r.study_case.truth_sub_class.code),
                spreadsheet_safe(truth or ""),
                spreadsheet_safe(r.answer),
                "" if not r.answer else int(r.answer == truth),
                "" if r.confidence is None else r.confidence,
                r.served_at.isoformat(),
                r.answered_at.isoformat() if r.answered_at else "",
                "" if r.server_ms is None else round(r.server_ms / 1000, 2),
                "" if r.active_ms is None else round(r.active_ms / 1000, 2),
                r.revisions,
                spreadsheet_safe(r.comment),
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
