"""Box export: labelImg / VOC XML (zipped), COCO JSON and CSV, one annotation per photo."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import PurePath
from xml.sax.saxutils import escape

from django.db.models import QuerySet
from django.utils import timezone

from derm_portal.csvsafe import spreadsheet_safe

from .. import pixels
from ..box_validation import LabelIndex, label_index
from ..models import AnnotationStatus, Box, Photo, PhotoAnnotation
from ..selectors import cases_visible_to


def annotations_for_export(
    *,
    user,
    statuses: Iterable[str] = (AnnotationStatus.ACCEPTED,),
    annotator=None,
    photos: QuerySet[Photo] | None = None,
) -> list[PhotoAnnotation]:
    """One annotation per photo: the gold one, else an accepted one, else the latest."""
    qs = PhotoAnnotation.objects.filter(photo__case__in=cases_visible_to(user), status__in=list(statuses))
    if annotator is not None:
        qs = qs.filter(annotator=annotator)
    if photos is not None:
        qs = qs.filter(photo__in=photos)
    chosen: dict[int, PhotoAnnotation] = {}
    rank = {
        AnnotationStatus.ACCEPTED: 0,
        AnnotationStatus.ANNOTATED: 1,
        AnnotationStatus.REJECTED: 2,
        AnnotationStatus.TO_ANNOTATE: 3,
    }
    for ann in qs.select_related("photo__case", "annotator").order_by("photo_id", "-updated_at", "-id"):
        cur = chosen.get(ann.photo_id)
        if cur is None or (not cur.is_gold and (ann.is_gold or rank[ann.status] < rank[cur.status])):
            chosen[ann.photo_id] = ann
    return [chosen[k] for k in sorted(chosen)]


def _boxes_of(anns: list[PhotoAnnotation]) -> dict[int, list[Box]]:
    out: dict[int, list[Box]] = defaultdict(list)
    for b in Box.objects.filter(annotation__in=anns).select_related("sub_class", "meta_class").order_by("id"):
        out[b.annotation_id].append(b)
    return out


def export_names(anns: list[PhotoAnnotation]) -> dict[int, str]:
    """File name per photo: the original name, made unique with -p<id> when needed."""
    counts = defaultdict(int)
    for a in anns:
        counts[PurePath(a.photo.original_name or "").name.lower()] += 1
    names = {}
    for a in anns:
        name = PurePath(a.photo.original_name or "").name
        ext = PurePath(name).suffix or "." + a.photo.file.name.rsplit(".", 1)[-1]
        if not name or counts[name.lower()] > 1:
            name = f"{PurePath(name).stem or 'photo'}-p{a.photo_id}{ext}"
        names[a.photo_id] = name
    return names


def voc_xml(ann: PhotoAnnotation, boxes: list[Box], filename: str) -> bytes:
    """VOC's convention is whole pixels: a whole-pixel edge is written as an integer (as
    labelImg writes it), a sub-pixel one as its decimal (as CVAT writes it; labelImg reads it)."""
    p = ann.photo
    objs = "".join(
        f"""
    <object>
        <name>{escape(b.label_code)}</name>
        <pose>Unspecified</pose>
        <truncated>{int(b.truncated)}</truncated>
        <difficult>{int(b.difficult)}</difficult>
        <bndbox>
            <xmin>{pixels.text(b.x0)}</xmin>
            <ymin>{pixels.text(b.y0)}</ymin>
            <xmax>{pixels.text(b.x1)}</xmax>
            <ymax>{pixels.text(b.y1)}</ymax>
        </bndbox>
    </object>"""
        for b in boxes
    )
    excluded = f"\n    <derm_excluded>{escape(ann.exclusion_reason)}</derm_excluded>" if ann.excluded else ""
    return f"""<annotation>
    <folder>images</folder>
    <filename>{escape(filename)}</filename>
    <source>
        <database>Derm Portal</database>
    </source>
    <size>
        <width>{p.width}</width>
        <height>{p.height}</height>
        <depth>3</depth>
    </size>
    <segmented>0</segmented>{excluded}{objs}
</annotation>
""".encode()


def export_voc(anns: list[PhotoAnnotation]) -> dict[str, bytes]:
    names, boxes = export_names(anns), _boxes_of(anns)
    return {PurePath(names[a.photo_id]).stem + ".xml": voc_xml(a, boxes.get(a.pk, []), names[a.photo_id]) for a in anns}


def export_voc_zip(anns: list[PhotoAnnotation], *, with_images: bool = False) -> bytes:
    """XML files under Annotations/; with the images, one folder images/ holding each photo
    next to its XML, which labelImg opens as is (Open Dir)."""
    out = io.BytesIO()
    names = export_names(anns) if with_images else {}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_voc(anns).items():
            zf.writestr(f"{'images' if with_images else 'Annotations'}/{name}", data)
        for a in anns if with_images else []:
            with a.photo.file.open("rb") as fh:
                zf.writestr(f"images/{names[a.photo_id]}", fh.read())
    return out.getvalue()


def export_coco(anns: list[PhotoAnnotation], labels: LabelIndex | None = None) -> dict:
    labels = labels or label_index()
    names, boxes = export_names(anns), _boxes_of(anns)
    cats, cat_ids = [], {}
    for ref in sorted(
        {id(r): r for r in labels.by_key.values()}.values(),
        key=lambda r: (r.meta_class.order, r.sub_class is not None, r.sub_class.order if r.sub_class else 0),
    ):
        if ref.code in cat_ids:
            continue
        cat_ids[ref.code] = len(cats) + 1
        cats.append({"id": cat_ids[ref.code], "name": ref.code, "supercategory": ref.meta_class.code})
    images, annotations = [], []
    for a in anns:
        im = {"id": a.photo_id, "file_name": names[a.photo_id], "width": a.photo.width, "height": a.photo.height}
        if a.excluded:
            im["derm_excluded"] = a.exclusion_reason
        images.append(im)
        for b in boxes.get(a.pk, []):
            if b.label_code not in cat_ids:  # a box labelled in another taxonomy version
                cat_ids[b.label_code] = len(cats) + 1
                cats.append(
                    {
                        "id": cat_ids[b.label_code],
                        "name": b.label_code,
                        "supercategory": b.meta_class.code if b.meta_class_id else "",
                    }
                )
            # width and height on the 1e-6 px grid give back the imported file's own decimals
            w, h = pixels.number(b.x1 - b.x0), pixels.number(b.y1 - b.y0)
            annotations.append(
                {
                    "id": b.pk,
                    "image_id": a.photo_id,
                    "category_id": cat_ids[b.label_code],
                    "bbox": [pixels.number(b.x0), pixels.number(b.y0), w, h],
                    "area": pixels.number(w * h),
                    "iscrowd": 0,
                    "attributes": {"difficult": b.difficult, "truncated": b.truncated},
                }
            )
    return {
        "info": {"description": "Derm Portal lesion boxes", "date_created": timezone.now().isoformat()},
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }


CSV_COLUMNS = [
    "photo_id",
    "filename",
    "case_id",
    "case_ref",
    "annotator",
    "status",
    "excluded",
    "exclusion_reason",
    "label",
    "sub_class",
    "meta_class",
    "x0",
    "y0",
    "x1",
    "y1",
    "image_width",
    "image_height",
    "difficult",
    "truncated",
]


def export_csv(anns: list[PhotoAnnotation]) -> str:
    """One row per box; a photo without boxes gets one row with empty box columns."""
    names, boxes = export_names(anns), _boxes_of(anns)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for a in anns:
        head = [
            a.photo_id,
            spreadsheet_safe(names[a.photo_id]),
            a.photo.case_id,
            spreadsheet_safe(a.photo.case.reference),
            spreadsheet_safe(a.annotator.get_username()),
            a.status,
            int(a.excluded),
            a.exclusion_reason,
        ]
        bs = boxes.get(a.pk, [])
        if not bs:
            w.writerow(head + [""] * 7 + [a.photo.width, a.photo.height, "", ""])
        for b in bs:
            # taxonomy codes are typed by admins (taxonomy import): escaped like every other text cell
            w.writerow(
                head
                + [
                    spreadsheet_safe(b.label_code),
                    spreadsheet_safe(b.sub_class.code if b.sub_class_id else ""),
                    spreadsheet_safe(b.meta_class.code if b.meta_class_id else ""),
                    pixels.text(b.x0),
                    pixels.text(b.y0),
                    pixels.text(b.x1),
                    pixels.text(b.y1),
                    b.image_width,
                    b.image_height,
                    int(b.difficult),
                    int(b.truncated),
                ]
            )
    return out.getvalue()
