"""Boxes in and out: labelImg / Pascal VOC XML (one file per photo), COCO JSON, CSV.

Coordinates are written as they are stored: integer pixel edges of the original photo,
xmin/ymin = x0/y0 and xmax/ymax = x1/y1, exactly what labelImg reads and writes; COCO
bbox = [x0, y0, x1 - x0, y1 - y0]. A label is a sub-class code or, for a box whose
annotator was unsure at the fine level, a meta-class code. Extra fields keep a round
trip lossless: VOC <difficult>/<truncated> and <derm_excluded>; COCO "attributes"
{difficult, truncated} and image "derm_excluded".

Photos are matched by file name to Photo.original_name (or a name exported as
"<stem>-p<photo id><ext>" when two photos share a name). Problems are reported per file
and line; the rest is imported. Re-importing replaces that annotator's boxes on a photo.
"""
from __future__ import annotations

import csv
import io
import json
import re
import xml.parsers.expat
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePath
from typing import Iterable
from xml.sax.saxutils import escape

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from derm_portal import roles

from . import services
from .boxes import AnnotationError, CleanBox, LabelIndex, box_validate, boxes_replace, event_log, label_index
from .images import ImageRejected
from .models import AnnotationStatus, Box, ExclusionReason, Photo, PhotoAnnotation
from .selectors import cases_visible_to

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic")
EXPORT_NAME_RE = re.compile(r"^(?P<stem>.*)-p(?P<pk>\d+)(?P<ext>\.[A-Za-z0-9]+)?$")


# --------------------------------------------------------------------------- report
@dataclass
class ImportReport:
    files: int = 0
    photos: int = 0
    boxes: int = 0
    created_cases: int = 0
    errors: list[dict] = field(default_factory=list)

    def error(self, file: str, line: int | None, message: str) -> None:
        self.errors.append({"file": file, "line": line, "message": message})

    def as_dict(self) -> dict:
        return {"files": self.files, "photos": self.photos, "boxes": self.boxes, "created_cases": self.created_cases,
                "errors": self.errors}

    def summary(self) -> str:
        return (f"{self.files} file(s): {self.boxes} box(es) on {self.photos} photo(s)"
                + (f", {self.created_cases} case(s) created" if self.created_cases else "")
                + (f"; {len(self.errors)} problem(s)" if self.errors else ""))


# --------------------------------------------------------------------------- XML with line numbers
@dataclass
class Node:
    tag: str
    line: int
    attrs: dict
    children: list["Node"] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> "Node | None":
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list["Node"]:
        return [c for c in self.children if c.tag == tag]

    def findtext(self, tag: str, default: str = "") -> str:
        node = self.find(tag)
        return node.text.strip() if node is not None else default


class XMLError(ValueError):
    def __init__(self, message: str, line: int | None):
        self.line = line
        super().__init__(message)


def parse_xml(data: bytes) -> Node:
    """A small expat tree builder that keeps each element's line; refuses DTDs/entities."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Node] = []
    root: list[Node] = []

    def start(tag, attrs):
        node = Node(tag, parser.CurrentLineNumber, attrs)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(tag):
        stack.pop()

    def chars(text):
        if stack:
            stack[-1].text += text

    def doctype(*args):
        raise XMLError("DOCTYPE/entity declarations are not accepted", parser.CurrentLineNumber)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise XMLError(f"malformed XML: {xml.parsers.expat.ErrorString(exc.code)} (column {exc.offset + 1})", exc.lineno)
    if not root:
        raise XMLError("empty document", 1)
    return root[0]


# --------------------------------------------------------------------------- photo matching
class PhotoMatcher:
    def __init__(self, photos: QuerySet[Photo]):
        self.by_name: dict[str, list[int]] = defaultdict(list)
        self.by_stem: dict[str, list[int]] = defaultdict(list)
        self.names: dict[int, str] = {}
        for pk, name in photos.values_list("pk", "original_name"):
            self.add(pk, name)

    def add(self, pk: int, name: str) -> None:
        name = PurePath(name or "").name
        self.names[pk] = name
        if name:
            self.by_name[name.lower()].append(pk)
            self.by_stem[PurePath(name).stem.lower()].append(pk)

    def match(self, filename: str) -> tuple[int | None, str | None]:
        name = PurePath(filename.replace("\\", "/")).name
        m = EXPORT_NAME_RE.match(name)
        if m and int(m["pk"]) in self.names and PurePath(self.names[int(m["pk"])]).stem.lower() == m["stem"].lower():
            return int(m["pk"]), None
        hits = self.by_name.get(name.lower()) or self.by_stem.get(PurePath(name).stem.lower()) or []
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, f"{len(hits)} photos are named {name!r}; rename them or export/import them per case."
        return None, f"no photo named {name!r} in the portal."


# --------------------------------------------------------------------------- import core
def _check_import_rights(user, annotator, status: str) -> None:
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        raise PermissionDenied("Your role may not import boxes.")
    if annotator.pk != user.pk and not roles.has_role(user, roles.ADMIN):
        raise PermissionDenied("Only admins import boxes in someone else's name.")
    if status == AnnotationStatus.ACCEPTED and not roles.has_role(user, roles.ADMIN):
        raise PermissionDenied("Only admins import boxes as already accepted.")
    if status not in (AnnotationStatus.ANNOTATED, AnnotationStatus.ACCEPTED, AnnotationStatus.TO_ANNOTATE):
        raise AnnotationError(f"Imported boxes can be 'to_annotate', 'annotated' or 'accepted', not {status!r}.")


def _store(*, photo: Photo, annotator, boxes: list[CleanBox], status: str, excluded: str, report: ImportReport,
           source: str, by, replace_accepted: bool) -> None:
    ann = PhotoAnnotation.objects.filter(photo=photo, annotator=annotator).first()
    before = ann.status if ann else ""
    if ann and ann.status == AnnotationStatus.ACCEPTED and not replace_accepted and status != AnnotationStatus.ACCEPTED:
        report.error(source, None, f"{annotator.get_username()}'s boxes on photo {photo.pk} are already accepted; not replaced.")
        return
    now = timezone.now()
    if ann is None:
        ann = PhotoAnnotation(photo=photo, annotator=annotator)
    ann.status = status
    ann.excluded = bool(excluded)
    ann.exclusion_reason = excluded or ""
    if status != AnnotationStatus.TO_ANNOTATE:
        ann.submitted_at = ann.submitted_at or now
    if status == AnnotationStatus.ACCEPTED:
        ann.reviewer, ann.reviewed_at = ann.reviewer or by, ann.reviewed_at or now
    ann.save()
    boxes_replace(annotation=ann, boxes=boxes)
    event_log(annotation=ann, actor=by, from_status=before, action="import", note=source)
    report.photos += 1
    report.boxes += len(boxes)


def _exclusion_from(value: str, source: str, line: int | None, report: ImportReport) -> str:
    value = (value or "").strip()
    if value and value not in ExclusionReason.values:
        report.error(source, line, f"unknown exclusion reason {value!r} ignored (expected one of {', '.join(ExclusionReason.values)}).")
        return ""
    return value


def _scale(box: dict, sx: float, sy: float) -> dict:
    return {**box, "x0": box["x0"] * sx, "x1": box["x1"] * sx, "y0": box["y0"] * sy, "y1": box["y1"] * sy}


# --------------------------------------------------------------------------- VOC
def voc_parse(data: bytes, source: str) -> tuple[dict | None, list[tuple[int | None, str]]]:
    """-> ({filename, width, height, excluded, objects: [{label, x0.., line}]}, [(line, error)])."""
    try:
        root = parse_xml(data)
    except XMLError as exc:
        return None, [(exc.line, str(exc))]
    if root.tag != "annotation":
        return None, [(root.line, f"expected an <annotation> root element (labelImg / Pascal VOC), found <{root.tag}>.")]
    problems: list[tuple[int | None, str]] = []
    size = root.find("size")
    width = height = None
    if size is not None:
        try:
            width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        except ValueError:
            problems.append((size.line, "<size> has no numeric width/height; the stored photo size is used."))
    filename = root.findtext("filename") or PurePath(root.findtext("path")).name
    excl = root.find("derm_excluded")
    doc = {"filename": filename, "width": width, "height": height, "objects": [], "line": root.line,
           "excluded": excl.text.strip() if excl is not None else "", "excluded_line": excl.line if excl is not None else None}
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        item = {"label": obj.findtext("name"), "line": obj.line,
                "difficult": obj.findtext("difficult", "0") in ("1", "true"),
                "truncated": obj.findtext("truncated", "0") in ("1", "true")}
        if bb is None:
            problems.append((obj.line, f"object {item['label']!r} has no <bndbox>; skipped."))
            continue
        for tag, key in (("xmin", "x0"), ("ymin", "y0"), ("xmax", "x1"), ("ymax", "y1")):
            item[key] = bb.findtext(tag) or None
        doc["objects"].append(item)
    return doc, problems


def voc_import(
    *,
    files: Iterable[tuple[str, bytes]],
    user,
    annotator=None,
    status: str = AnnotationStatus.ANNOTATED,
    images: dict[str, bytes | Path] | None = None,
    create_cases: bool = False,
    patient_prefix: str = "IMPORT-",
    replace_accepted: bool = False,
    labels: LabelIndex | None = None,
) -> ImportReport:
    """Import labelImg/VOC XML files. With create_cases, a photo that is not in the portal
    yet is created from `images` (file name -> bytes or Path, read when needed) in a new case of its own
    (patient code = patient_prefix + image stem)."""
    annotator = annotator or user
    _check_import_rights(user, annotator, status)
    if create_cases and not roles.has_role(user, roles.CAN_EDIT_CASES):
        raise PermissionDenied("Your role may not create cases.")
    labels = labels or label_index()
    report = ImportReport()
    matcher = PhotoMatcher(Photo.objects.filter(case__in=cases_visible_to(user)))
    image_by_name = {PurePath(k).name.lower(): k for k in (images or {})}
    image_by_stem = {PurePath(k).stem.lower(): k for k in (images or {})}
    photos = {}

    def one(source: str, data: bytes) -> None:
        report.files += 1
        doc, problems = voc_parse(data, source)
        for line, msg in problems:
            report.error(source, line, msg)
        if doc is None:
            return
        filename = doc["filename"] or (PurePath(source).stem + ".jpg")
        pk, why = matcher.match(filename)
        if pk is None and create_cases:
            key = image_by_name.get(PurePath(filename).name.lower()) or image_by_stem.get(PurePath(source).stem.lower())
            if key is None:
                report.error(source, doc["line"], f"{why} No image file {filename!r} next to the XML to create it from.")
                return
            try:
                with transaction.atomic():
                    case = services.case_create(patient_code=f"{patient_prefix}{PurePath(key).stem}", created_by=user)
                    data = images[key].read_bytes() if isinstance(images[key], Path) else images[key]
                    # bulk import of training data: no prediction per photo (as import_dataset)
                    photo = services.photo_attach(case=case, data=data, filename=PurePath(key).name, uploaded_by=user,
                                                  run_hooks=False)
            except (ImageRejected, services.DuplicatePhoto) as exc:
                report.error(source, None, str(exc))
                return
            except Exception as exc:  # e.g. validation of the generated patient code
                report.error(source, None, f"could not create a case for {key}: {exc}")
                return
            report.created_cases += 1
            matcher.add(photo.pk, photo.original_name)
            photos[photo.pk] = photo
            pk = photo.pk
        elif pk is None:
            report.error(source, doc["line"], why)
            return
        photo = photos.get(pk) or Photo.objects.get(pk=pk)
        sx = sy = 1.0
        if doc["width"] and doc["height"] and (doc["width"], doc["height"]) != (photo.width, photo.height):
            sx, sy = photo.width / doc["width"], photo.height / doc["height"]
            if abs(sx - sy) > 0.01 * max(sx, sy):
                report.error(source, doc["line"], f"size {doc['width']}×{doc['height']} in the XML does not match the photo ({photo.width}×{photo.height}); file skipped.")
                return
            report.error(source, doc["line"], f"note: boxes scaled from {doc['width']}×{doc['height']} to the stored photo size {photo.width}×{photo.height}.")
        clean = []
        for i, obj in enumerate(doc["objects"]):
            raw = _scale(obj, sx, sy) if sx != 1.0 and all(obj.get(k) is not None for k in ("x0", "y0", "x1", "y1")) and _all_numbers(obj) else obj
            box, errs = box_validate(raw, index=i, width=photo.width, height=photo.height, labels=labels,
                                     where=f"object {obj.get('label')!r}")
            for e in errs:
                report.error(source, obj["line"], e["message"])
            if box:
                clean.append(box)
        excluded = _exclusion_from(doc["excluded"], source, doc["excluded_line"], report)
        with transaction.atomic():
            _store(photo=photo, annotator=annotator, boxes=clean, status=status, excluded=excluded, report=report,
                   source=source, by=user, replace_accepted=replace_accepted)

    # Commit in chunks (each file in its own savepoint, so a bad file still leaves the
    # others imported): one commit per file made a 500-photo import disk-bound.
    files = iter(files)
    while chunk := list(islice(files, 100)):
        with transaction.atomic():
            for source, data in chunk:
                one(source, data)
    return report


def _all_numbers(obj: dict) -> bool:
    try:
        for k in ("x0", "y0", "x1", "y1"):
            obj[k] = float(obj[k])
        return True
    except (TypeError, ValueError):
        return False


def voc_import_folder(*, folder: Path, user, **kwargs) -> ImportReport:
    """A labelImg folder: *.xml (anywhere below) and, for create_cases, the images."""
    folder = Path(folder)
    xmls = sorted(folder.rglob("*.xml"))
    images = None
    if kwargs.get("create_cases"):
        images = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_EXTS}
    return voc_import(files=((str(p.relative_to(folder)), p.read_bytes()) for p in xmls), user=user, images=images, **kwargs)


# --------------------------------------------------------------------------- COCO
def _array_lines(text: str, key: str) -> list[int]:
    """Line number of each element of the top-level array `key` (for error messages)."""
    m = re.search(r'"%s"\s*:\s*\[' % re.escape(key), text)
    if not m:
        return []
    dec, idx, lines = json.JSONDecoder(), m.end(), []
    while True:
        while idx < len(text) and text[idx] in " \t\r\n,":
            idx += 1
        if idx >= len(text) or text[idx] == "]":
            return lines
        lines.append(text.count("\n", 0, idx) + 1)
        try:
            _, idx = dec.raw_decode(text, idx)
        except json.JSONDecodeError:
            return lines


def coco_import(
    *,
    data: bytes,
    source: str,
    user,
    annotator=None,
    status: str = AnnotationStatus.ANNOTATED,
    replace_accepted: bool = False,
    labels: LabelIndex | None = None,
) -> ImportReport:
    annotator = annotator or user
    _check_import_rights(user, annotator, status)
    labels = labels or label_index()
    report = ImportReport(files=1)
    try:
        text = data.decode("utf-8-sig")
        doc = json.loads(text)
    except UnicodeDecodeError:
        report.error(source, None, "not UTF-8 text.")
        return report
    except json.JSONDecodeError as exc:
        report.error(source, exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno}).")
        return report
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        report.error(source, 1, 'expected a COCO object with "images", "annotations" and "categories" lists.')
        return report
    img_lines, ann_lines, cat_lines = (_array_lines(text, k) for k in ("images", "annotations", "categories"))
    line = lambda lines, i: lines[i] if i < len(lines) else None  # noqa: E731
    categories = {}
    for i, c in enumerate(doc.get("categories") or []):
        if not isinstance(c, dict) or "id" not in c:
            report.error(source, line(cat_lines, i), f"categories[{i}] has no id.")
            continue
        ref = labels.resolve(c.get("name"))
        if ref is None:
            report.error(source, line(cat_lines, i), f"category {c.get('name')!r} is not a sub-class or meta-class of {labels.taxonomy}; its boxes are skipped.")
        categories[c["id"]] = (c.get("name"), ref)
    matcher = PhotoMatcher(Photo.objects.filter(case__in=cases_visible_to(user)))
    images: dict = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            report.error(source, line(img_lines, i), f"images[{i}] needs an id and a file_name.")
            continue
        pk, why = matcher.match(str(im["file_name"]))
        if pk is None:
            report.error(source, line(img_lines, i), why)
            continue
        images[im["id"]] = {"photo": pk, "width": im.get("width"), "height": im.get("height"), "boxes": [], "line": line(img_lines, i),
                            "excluded": _exclusion_from(str(im.get("derm_excluded") or ""), source, line(img_lines, i), report)}
    for i, a in enumerate(doc["annotations"]):
        ln = line(ann_lines, i)
        if not isinstance(a, dict):
            report.error(source, ln, f"annotations[{i}] is not an object.")
            continue
        if a.get("image_id") not in images:
            known = any(isinstance(im, dict) and im.get("id") == a.get("image_id") for im in doc["images"])
            if not known:
                report.error(source, ln, f"annotations[{i}] refers to image_id {a.get('image_id')!r}, which is not in images.")
            continue
        cat = categories.get(a.get("category_id"))
        if cat is None:
            report.error(source, ln, f"annotations[{i}]: unknown category_id {a.get('category_id')!r}.")
            continue
        if cat[1] is None:
            report.error(source, ln, f"annotations[{i}]: label {cat[0]!r} is not in the taxonomy; skipped.")
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            report.error(source, ln, f"annotations[{i}]: bbox must be [x, y, width, height] numbers.")
            continue
        attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
        images[a["image_id"]]["boxes"].append(({
            "x0": bbox[0], "y0": bbox[1], "x1": bbox[0] + bbox[2], "y1": bbox[1] + bbox[3], "label": cat[1].code,
            "difficult": bool(attrs.get("difficult")), "truncated": bool(attrs.get("truncated")),
        }, ln, i))
    photo_objs = Photo.objects.in_bulk([im["photo"] for im in images.values()])
    for im in images.values():
        photo = photo_objs[im["photo"]]
        if im["width"] and im["height"] and (im["width"], im["height"]) != (photo.width, photo.height):
            report.error(source, im["line"], f"image size {im['width']}×{im['height']} does not match the stored photo {photo.width}×{photo.height}; its boxes are skipped.")
            continue
        clean = []
        for raw, ln, i in im["boxes"]:
            box, errs = box_validate(raw, index=i, width=photo.width, height=photo.height, labels=labels, where=f"annotations[{i}]")
            for e in errs:
                report.error(source, ln, e["message"])
            if box:
                clean.append(box)
        with transaction.atomic():
            _store(photo=photo, annotator=annotator, boxes=clean, status=status, excluded=im["excluded"], report=report,
                   source=source, by=user, replace_accepted=replace_accepted)
    return report


# --------------------------------------------------------------------------- export
def annotations_for_export(*, user, statuses: Iterable[str] = (AnnotationStatus.ACCEPTED,), annotator=None,
                           photos: QuerySet[Photo] | None = None) -> list[PhotoAnnotation]:
    """One annotation per photo: the gold one, else an accepted one, else the latest."""
    qs = PhotoAnnotation.objects.filter(photo__case__in=cases_visible_to(user), status__in=list(statuses))
    if annotator is not None:
        qs = qs.filter(annotator=annotator)
    if photos is not None:
        qs = qs.filter(photo__in=photos)
    chosen: dict[int, PhotoAnnotation] = {}
    rank = {AnnotationStatus.ACCEPTED: 0, AnnotationStatus.ANNOTATED: 1, AnnotationStatus.REJECTED: 2, AnnotationStatus.TO_ANNOTATE: 3}
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
    p = ann.photo
    objs = "".join(
        f"""
    <object>
        <name>{escape(b.label_code)}</name>
        <pose>Unspecified</pose>
        <truncated>{int(b.truncated)}</truncated>
        <difficult>{int(b.difficult)}</difficult>
        <bndbox>
            <xmin>{b.x0}</xmin>
            <ymin>{b.y0}</ymin>
            <xmax>{b.x1}</xmax>
            <ymax>{b.y1}</ymax>
        </bndbox>
    </object>""" for b in boxes
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


def export_voc_zip(anns: list[PhotoAnnotation]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_voc(anns).items():
            zf.writestr(f"Annotations/{name}", data)
    return out.getvalue()


def export_coco(anns: list[PhotoAnnotation], labels: LabelIndex | None = None) -> dict:
    labels = labels or label_index()
    names, boxes = export_names(anns), _boxes_of(anns)
    cats, cat_ids = [], {}
    for ref in sorted({id(r): r for r in labels.by_key.values()}.values(), key=lambda r: (r.meta_class.order, r.sub_class is not None, r.sub_class.order if r.sub_class else 0)):
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
                cats.append({"id": cat_ids[b.label_code], "name": b.label_code, "supercategory": b.meta_class.code if b.meta_class_id else ""})
            w, h = b.x1 - b.x0, b.y1 - b.y0
            annotations.append({"id": b.pk, "image_id": a.photo_id, "category_id": cat_ids[b.label_code],
                                "bbox": [b.x0, b.y0, w, h], "area": w * h, "iscrowd": 0,
                                "attributes": {"difficult": b.difficult, "truncated": b.truncated}})
    return {"info": {"description": "Derm Portal lesion boxes", "date_created": timezone.now().isoformat()},
            "images": images, "annotations": annotations, "categories": cats}


CSV_COLUMNS = ["photo_id", "filename", "case_id", "case_ref", "annotator", "status", "excluded", "exclusion_reason",
               "label", "sub_class", "meta_class", "x0", "y0", "x1", "y1", "image_width", "image_height", "difficult", "truncated"]


def _cell(value):
    """Neutralise spreadsheet formulas in free-text cells (file names come from uploads)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(anns: list[PhotoAnnotation]) -> str:
    """One row per box; a photo without boxes gets one row with empty box columns."""
    names, boxes = export_names(anns), _boxes_of(anns)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for a in anns:
        head = [a.photo_id, _cell(names[a.photo_id]), a.photo.case_id, _cell(a.photo.case.reference), _cell(a.annotator.get_username()), a.status,
                int(a.excluded), a.exclusion_reason]
        bs = boxes.get(a.pk, [])
        if not bs:
            w.writerow(head + [""] * 7 + [a.photo.width, a.photo.height, "", ""])
        for b in bs:
            w.writerow(head + [b.label_code, b.sub_class.code if b.sub_class_id else "", b.meta_class.code if b.meta_class_id else "",
                               b.x0, b.y0, b.x1, b.y1, b.image_width, b.image_height, int(b.difficult), int(b.truncated)])
    return out.getvalue()
