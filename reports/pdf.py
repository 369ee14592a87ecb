"""PDF report of a reader study (reportlab platypus), with the ROC charts drawn by matplotlib."""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from .charts import render_matplotlib, task_title
from .models import QuestionType


def _p(x, digits=1):
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _n(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def _pv(x):
    return "—" if x is None else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def study_report_pdf(*, study, res: dict) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    ss = getSampleStyleSheet()
    small = ss["BodyText"].clone("small", fontSize=8, leading=10)
    body = ss["BodyText"].clone("body", fontSize=9.5, leading=12)
    binary = study.question_type == QuestionType.BINARY
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=1.6 * cm,
        rightMargin=1.6 * cm,
        topMargin=1.5 * cm,
        bottomMargin=1.5 * cm,
        title=f"Reader study: {study.title}",
        author="Derm Portal",
    )
    grid = TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
            ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#c4ccd6")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
    )
    s = res["study"]
    story = [
        Paragraph(f"Reader study: {escape(study.title)}", ss["Title"]),
        Paragraph(
            escape(
                f"“{s['question']}” · {res['n_cases_analysed']} cases · {res['n_readers']} readers · "
                f"model: {s['model'] or 'none'} · status {s['status']}"
            ),
            body,
        ),
        Spacer(1, 6),
    ]
    for w in res["warnings"]:
        story.append(Paragraph(f"<font color='#a86400'>{escape(w)}</font>", body))

    def mrmc_block(task, heading):
        m = task.get("mrmc")
        if not m:
            return [Paragraph(escape(heading + ": " + " ".join(task.get("notes", [])) or "no MRMC comparison"), body)]
        d = m["difference"]
        rows = [
            ["Readers' mean AUC", "Model AUC (95% CI, DeLong)", "Difference (readers − model), 95% CI", "p", "ddf"],
            [
                _n(m["reader_mean_auc"]),
                f"{_n(m['model_auc'])} ({_n(m['model_auc_ci'][0])}–{_n(m['model_auc_ci'][1])})",
                f"{_n(m['estimate'])} ({_n(m['ci'][0])} to {_n(m['ci'][1])})",
                _pv(m["p_value"]),
                _n(d.get("ddf"), 1),
            ],
        ]
        t = Table(rows, hAlign="LEFT")
        t.setStyle(grid)
        return [
            Paragraph(f"<b>{escape(heading)}</b> ({m['n_readers']} readers, {escape(m['analysis'])})", body),
            t,
            Spacer(1, 6),
        ]

    aided = {t["key"]: t for t in res["aided_tasks"]}
    for task in res["tasks"]:
        title = task_title(task, binary)
        png = render_matplotlib(task, aided_task=aided.get(task["key"]), title="", fmt="png", dpi=130)
        story.append(
            KeepTogether(
                [  # heading, chart and its MRMC table on one page
                    Paragraph(escape(title), ss["Heading3"]),
                    Image(io.BytesIO(png), width=17.5 * cm, height=17.5 * cm * 5.4 / 8.6),
                    *mrmc_block(task, "Readers vs model (MRMC)"),
                ]
            )
        )

    story.append(Paragraph("Per reader" + (" (unaided session)" if res["aided"] else ""), ss["Heading3"]))
    head = (
        ["Reader", "Experience", "Read"]
        + (["Sens.", "Spec."] if binary else [])
        + ["Accuracy"]
        + ([] if binary else ["Bal. acc."])
        + ["Mean time/case"]
    )
    rows = [head]
    for r in res["readers"]:
        rows.append(
            [r["name"], r["experience"], str(r["n_read"])]
            + ([_p(r["sensitivity"]), _p(r["specificity"])] if binary else [])
            + [_p(r["accuracy"])]
            + ([] if binary else [_p(r["balanced_accuracy"])])
            + ["—" if r["mean_time_s"] is None else f"{r['mean_time_s']:.1f} s"]
        )
    ms = res.get("model_summary")
    if ms:
        rows.append(
            ["Model", "—", str(res["n_cases_analysed"])]
            + ([_p(ms.get("sensitivity")), _p(ms.get("specificity"))] if binary else [])
            + [_p(ms["accuracy"])]
            + ([] if binary else [_p(ms["balanced_accuracy"])])
            + ["—"]
        )
    t = Table(rows, hAlign="LEFT", repeatRows=1)
    t.setStyle(grid)
    if ms:
        t.setStyle(TableStyle([("BACKGROUND", (0, len(rows) - 1), (-1, len(rows) - 1), colors.HexColor("#e7f3f6"))]))
    story += [t, Spacer(1, 4)]
    if ms:
        story.append(Paragraph(escape(f"Model decision rule: {ms['rule']}."), small))

    if res["aided"]:
        aided_head = Paragraph("AI-aided session: change per reader", ss["Heading3"])
        rows = [
            ["Reader", "Experience"]
            + (["Sensitivity", "Specificity"] if binary else [])
            + ["Accuracy", "Right→wrong", "Wrong→right", ""]
        ]
        harmed_rows = []
        for k, a in enumerate(res["aided"], start=1):
            rows.append(
                [a["name"], a["experience"]]
                + (
                    [
                        f"{_p(a['sensitivity_unaided'])} → {_p(a['sensitivity_aided'])}",
                        f"{_p(a['specificity_unaided'])} → {_p(a['specificity_aided'])}",
                    ]
                    if binary
                    else []
                )
                + [
                    f"{_p(a['accuracy_unaided'])} → {_p(a['accuracy_aided'])}",
                    str(a["correct_to_wrong"]),
                    str(a["wrong_to_correct"]),
                    "harmed" if a["harmed"] else "",
                ]
            )
            if a["harmed"]:
                harmed_rows.append(k)
        t = Table(rows, hAlign="LEFT", repeatRows=1)
        t.setStyle(grid)
        for k in harmed_rows:
            t.setStyle(TableStyle([("BACKGROUND", (0, k), (-1, k), colors.HexColor("#fbe4e2"))]))
        story += [
            KeepTogether([aided_head, t]),
            Paragraph("Harmed (red): lower accuracy with the model's differential than without.", small),
            Spacer(1, 4),
        ]
        for task in res["aided_tasks"]:
            o = task.get("aided_vs_unaided")
            if not o:
                continue
            label = "" if binary else f" ({task['label']})"
            story.append(
                Paragraph(
                    escape(
                        f"AI-aided vs unaided{label}: readers' mean AUC {_n(o['test_means'][0])} -> {_n(o['test_means'][1])}, "
                        f"difference {_n(o['difference'])} (95% CI {_n(o['ci_low'])} to {_n(o['ci_high'])}), "
                        f"F = {o['F']:.2f}, ddf = {_n(o['ddf'], 1)}, p = {_pv(o['p_value'])}; OR two-test analysis, "
                        f"Cov1 {o['cov1']:.5f}, Cov2 {o['cov2']:.5f}, Cov3 {o['cov3']:.5f}; {o['n_readers']} readers."
                    ),
                    body,
                )
            )

    story.append(Paragraph("Method", ss["Heading3"]))
    story.append(
        Paragraph(
            escape(
                "ROC, AUC with DeLong 95% CI and the Youden point from inference.ml.metrics. "
                "Readers without a confidence scale are single operating points (2-point ratings)."
            ),
            small,
        )
    )
    story.append(Paragraph("<b>MRMC:</b> " + escape(res["method"]), small))
    story.append(Paragraph("<b>References:</b> " + escape(res["reference"]), small))
    story.append(Paragraph("<b>Validation:</b> " + escape(res["validation"]), small))
    story.append(Spacer(1, 6))
    story.append(Paragraph("Derm Portal · decision support research output, not a diagnosis.", small))
    doc.build(story)
    return buf.getvalue()
