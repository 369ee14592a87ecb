"""The patient report as a PDF (reportlab platypus): the same content as the page (patient_report.py)."""

from __future__ import annotations

import io
from pathlib import Path

from django.utils import timezone
from PIL import Image as PILImage

from annotation.models import Photo

from .patient_report import DISCLAIMER, GRADES, SCORE_EXPLANATION, THRESHOLDS, PatientReport

_FONTS: tuple[str, str] | None = None


def _fonts() -> tuple[str, str]:
    """DejaVu Sans when installed (covers accents, Greek, Cyrillic), else Helvetica."""
    global _FONTS
    if _FONTS is None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        _FONTS = ("Helvetica", "Helvetica-Bold")
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
            regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
            if regular.exists() and bold.exists():
                try:
                    pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
                    pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
                    pdfmetrics.registerFontFamily(
                        "DejaVuSans",
                        normal="DejaVuSans",
                        bold="DejaVuSans-Bold",
                        italic="DejaVuSans",
                        boldItalic="DejaVuSans-Bold",
                    )
                except Exception:  # pragma: no cover - broken font file
                    break
                _FONTS = ("DejaVuSans", "DejaVuSans-Bold")
                break
    return _FONTS


def _photo_flowable(photo: Photo, max_w: float, max_h: float):
    from reportlab.platypus import Image, Paragraph

    try:
        with photo.file.open("rb") as fh:
            img = PILImage.open(fh)
            img.thumbnail((900, 900))
            img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85)
    except (OSError, ValueError):
        return Paragraph("(photo not available)")
    buf.seek(0)
    scale = min(max_w / img.width, max_h / img.height)
    return Image(buf, width=img.width * scale, height=img.height * scale)


def _score_scale(score: float, width: float, font: str, bold: str):
    """The 1..3 score axis with the three grade bands, tick labels and a marker at S."""
    from reportlab.graphics.shapes import Drawing, Line, Polygon, Rect, String
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth

    h = 70
    d = Drawing(width, h)
    left, right, y0, bh = 8, width - 8, 30, 14

    def x(v: float) -> float:
        return left + (v - 1.0) / 2.0 * (right - left)

    bands = [(1.0, THRESHOLDS[0], 1), (THRESHOLDS[0], THRESHOLDS[1], 2), (THRESHOLDS[1], 3.0, 3)]
    for lo, hi, g in bands:
        d.add(Rect(x(lo), y0, x(hi) - x(lo), bh, fillColor=colors.HexColor(GRADES[g]["colour"]), strokeColor=None))
        label = GRADES[g]["label"]
        if stringWidth(label, bold, 7.5) > x(hi) - x(lo) - 4:
            label = label.split()[0]  # "High" when "High malignancy" does not fit its band
        d.add(
            String(
                (x(lo) + x(hi)) / 2,
                y0 + 4,
                label,
                fontName=bold,
                fontSize=7.5,
                fillColor=colors.white,
                textAnchor="middle",
            )
        )
    for v in (1.0, 1.5, 2.0, 2.5, 3.0):
        d.add(Line(x(v), y0, x(v), y0 - 4, strokeColor=colors.HexColor("#5d6b7a"), strokeWidth=0.6))
        d.add(
            String(
                x(v),
                y0 - 12,
                f"{v:g}",
                fontName=font,
                fontSize=7.5,
                fillColor=colors.HexColor("#5d6b7a"),
                textAnchor="middle",
            )
        )
    s = max(1.0, min(3.0, score))
    mx = x(s)
    d.add(
        Polygon(
            [mx - 6, y0 + bh + 13, mx + 6, y0 + bh + 13, mx, y0 + bh + 2],
            fillColor=colors.HexColor("#1d2733"),
            strokeColor=None,
        )
    )
    label_x = min(max(mx, left + 30), right - 30)
    d.add(
        String(
            label_x,
            y0 + bh + 16,
            f"S = {score:.2f}",
            fontName=bold,
            fontSize=9,
            fillColor=colors.HexColor("#1d2733"),
            textAnchor="middle",
        )
    )
    d.add(
        String(
            right,
            1,
            "malignancy score S (1 = benign … 3 = high malignancy)",
            fontName=font,
            fontSize=7,
            fillColor=colors.HexColor("#5d6b7a"),
            textAnchor="end",
        )
    )
    return d


def patient_report_pdf(*, report: PatientReport) -> bytes:
    """The report as an A4 PDF (reportlab platypus). Only for an available report."""
    if not report.available:
        raise ValueError("No graded prediction: there is no report to render.")
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT, TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font, bold = _fonts()
    info = report.info
    colour = colors.HexColor(info["colour"])
    ink, muted, line = colors.HexColor("#1d2733"), colors.HexColor("#5d6b7a"), colors.HexColor("#dde3ea")
    base = ParagraphStyle("base", fontName=font, fontSize=10, leading=14, textColor=ink, alignment=TA_LEFT)
    small = ParagraphStyle("small", parent=base, fontSize=8.5, leading=11.5, textColor=muted)
    h1 = ParagraphStyle("h1", parent=base, fontName=bold, fontSize=18, leading=22, spaceAfter=2)
    h2 = ParagraphStyle("h2", parent=base, fontName=bold, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4)
    grade_style = ParagraphStyle("grade", parent=base, fontName=bold, fontSize=16, leading=20, textColor=colour)
    big = ParagraphStyle("big", parent=base, fontSize=11, leading=15)

    buf = io.BytesIO()
    page_w, page_h = A4
    margin = 16 * mm
    content_w = page_w - 2 * margin
    title = f"Skin lesion report, case {report.case_reference}"

    def on_page(canvas, doc):
        canvas.saveState()
        canvas.setFont(font, 7.5)
        canvas.setFillColor(muted)
        canvas.drawString(
            margin, 9 * mm, f"Derm Portal · case {report.case_reference} · decision support, not a diagnosis"
        )
        canvas.drawRightString(page_w - margin, 9 * mm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=14 * mm,
        bottomMargin=16 * mm,
        title=title,
        author="Derm Portal",
        subject="Malignancy grade (decision support, not a diagnosis)",
    )
    story = [
        Paragraph("Skin lesion report", h1),
        Paragraph(
            f"Case reference <b>{escape(report.case_reference)}</b> · photo {report.photo.pk} · "
            f"report made {timezone.localtime(report.generated_at):%d %b %Y %H:%M}",
            small,
        ),
        Spacer(1, 6 * mm),
    ]
    if report.confirmed_diagnosis:
        confirmed = Table(
            [
                [
                    [
                        Paragraph("Confirmed diagnosis", ParagraphStyle("h2c", parent=h2, spaceBefore=0)),
                        Paragraph(escape(report.secondary_note), big),
                    ]
                ]
            ],
            colWidths=[content_w],
        )
        confirmed.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 1.5, ink),
                    ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#eef2f6")),
                    ("LEFTPADDING", (0, 0), (-1, -1), 10),
                    ("TOPPADDING", (0, 0), (-1, -1), 8),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 10),
                ]
            )
        )
        story += [confirmed, Spacer(1, 5 * mm)]
    photo_w = 62 * mm
    result_cell = [
        Paragraph("The model's view (secondary)" if report.confirmed_diagnosis else "Result", small),
        Paragraph(escape(info["label"]), grade_style),
        Paragraph(escape(info["headline"]), big),
        Paragraph(escape(report.estimate_text), base),
        Spacer(1, 3 * mm),
        Paragraph(
            f"Malignancy score <b>S = {report.score:.2f}</b> on a scale from 1 (benign) to 3 (high malignancy); "
            "the advice follows the model's urgency tier, not the score alone",
            base,
        ),
        Spacer(1, 2 * mm),
        _score_scale(report.score, content_w - photo_w - 14 * mm, font, bold),
    ]
    top = Table([[_photo_flowable(report.photo, photo_w, 62 * mm), result_cell]], colWidths=[photo_w + 6 * mm, None])
    top.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (0, 0), 0),
                ("BACKGROUND", (1, 0), (1, 0), colors.HexColor(info["tint"])),
                ("LINEBEFORE", (1, 0), (1, 0), 4, colour),
                ("LEFTPADDING", (1, 0), (1, 0), 10),
                ("RIGHTPADDING", (1, 0), (1, 0), 10),
                ("TOPPADDING", (1, 0), (1, 0), 8),
                ("BOTTOMPADDING", (1, 0), (1, 0), 10),
            ]
        )
    )
    story.append(top)

    h2_box = ParagraphStyle("h2box", parent=h2, spaceBefore=0)
    advice = Table(
        [[[Paragraph("What you should do", h2_box), Paragraph(escape(report.advice_text), big)]]], colWidths=[content_w]
    )
    advice.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1.5, colour),
                ("LEFTPADDING", (0, 0), (-1, -1), 10),
                ("RIGHTPADDING", (0, 0), (-1, -1), 10),
                ("TOPPADDING", (0, 0), (-1, -1), 8),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 10),
            ]
        )
    )
    story += [Spacer(1, 6 * mm), advice]
    if report.caution:
        story += [Spacer(1, 3 * mm), Paragraph(f"<b>Please note:</b> {escape(report.caution)}", base)]

    head = ParagraphStyle("head", parent=base, fontName=bold, textColor=muted)
    head_r = ParagraphStyle("head_r", parent=head, alignment=TA_RIGHT)
    right = ParagraphStyle("right", parent=base, alignment=TA_RIGHT)
    rows = [
        [Paragraph("", head), Paragraph("Condition", head), Paragraph("Type", head), Paragraph("Probability", head_r)]
    ]
    for i, item in enumerate(report.differential, 1):
        rows.append(
            [
                Paragraph(str(i), base),
                Paragraph(escape(item.name), base),
                Paragraph(item.grade_words, base),
                Paragraph(f"{item.probability * 100:.0f} %", right),
            ]
        )
    diff = Table(rows, colWidths=[8 * mm, None, 40 * mm, 32 * mm], repeatRows=1)
    diff.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, line),
                ("LINEBELOW", (0, 1), (-1, -1), 0.4, line),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    story += [
        KeepTogether(
            [
                Paragraph("What the model found most likely", h2),
                Paragraph(
                    "The conditions the model considered most likely for this photo, with its probabilities.", small
                ),
                Spacer(1, 2 * mm),
                diff,
            ]
        ),
    ]

    small_b = ParagraphStyle("small_b", parent=small, fontName=bold)
    about = [
        ("Model", report.model_words),
        ("Photo analysed", f"{timezone.localtime(report.predicted_at):%d %b %Y %H:%M}"),
        ("How the score works", SCORE_EXPLANATION),
    ]
    about_t = Table([[Paragraph(k, small_b), Paragraph(escape(v), small)] for k, v in about], colWidths=[36 * mm, None])
    about_t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (0, -1), 0)]))
    disclaimer = Table([[Paragraph(f"<b>Important:</b> {escape(DISCLAIMER)}", base)]], colWidths=[content_w])
    disclaimer.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#eef2f6")),
                ("BOX", (0, 0), (-1, -1), 0.8, colors.HexColor("#9fb4c4")),
                ("LEFTPADDING", (0, 0), (-1, -1), 10),
                ("RIGHTPADDING", (0, 0), (-1, -1), 10),
                ("TOPPADDING", (0, 0), (-1, -1), 8),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
            ]
        )
    )
    story += [KeepTogether([Paragraph("About this report", h2), about_t, Spacer(1, 5 * mm), disclaimer])]
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()
