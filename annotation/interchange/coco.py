"""COCO JSON import."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path, PurePath

from django.core.exceptions import PermissionDenied
from django.db import transaction

from derm_portal import roles

from .. import services
from ..box_validation import LabelIndex, box_validate, label_index
from ..models import AnnotationStatus, Photo
from ..selectors import cases_visible_to
from .limits import check_count, check_size
from .mapping import category_key
from .matching import PhotoMatcher
from .report import ImportReport
from .store import check_import_rights, exclusion_from, store_boxes
from .voc import _case_from_image


def _array_lines(text: str, key: str) -> list[int]:
    """Line number of each element of the top-level array `key` (for error messages), in one
    pass: newlines are counted from the previous element, not from the start of the file."""
    m = re.search(rf'"{re.escape(key)}"\s*:\s*\[', text)
    if not m:
        return []
    dec, idx, lines = json.JSONDecoder(), m.end(), []
    line, counted = text.count("\n", 0, idx) + 1, idx
    while True:
        while idx < len(text) and text[idx] in " \t\r\n,":
            idx += 1
        if idx >= len(text) or text[idx] == "]":
            return lines
        line += text.count("\n", counted, idx)
        counted = idx
        lines.append(line)
        try:
            _, idx = dec.raw_decode(text, idx)
        except json.JSONDecodeError:
            return lines


Progress = Callable[[str, int, int], None]


def coco_import(
    *,
    data: bytes,
    source: str,
    user,
    annotator=None,
    status: str = AnnotationStatus.ANNOTATED,
    replace_accepted: bool = False,
    labels: LabelIndex | None = None,
    progress: Progress | None = None,
    images: dict[str, bytes | Path] | None = None,
    create_cases: bool = False,
    patient_prefix: str = "IMPORT-",
) -> ImportReport:
    """Import one COCO file. Time and memory grow linearly with the file; files over the caps
    of limits.py are refused whole (ImportTooLarge). `progress(stage, done, total)` is called
    now and then while photos are written. With create_cases, an image not in the portal yet is
    created from `images` (file name -> bytes or Path) in a new case of its own, as voc_import does."""
    annotator = annotator or user
    check_import_rights(user, annotator, status)
    if create_cases and not roles.has_role(user, roles.CAN_EDIT_CASES):
        raise PermissionDenied("Your role may not create cases.")
    image_files = images or {}  # `images` below is the file's image table
    image_by_name = {PurePath(k).name.lower(): k for k in image_files}
    check_size(source, len(data))
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
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("images"), list)
        or not isinstance(doc.get("annotations"), list)
    ):
        report.error(source, 1, 'expected a COCO object with "images", "annotations" and "categories" lists.')
        return report
    check_count(source, "images", len(doc["images"]), "MAX_IMAGES")
    check_count(source, "annotations", len(doc["annotations"]), "MAX_ANNOTATIONS")
    img_lines, ann_lines, cat_lines = (_array_lines(text, k) for k in ("images", "annotations", "categories"))

    def line(lines, i):
        return lines[i] if i < len(lines) else None

    categories = {}
    for i, c in enumerate(doc.get("categories") or []):
        if not isinstance(c, dict) or not isinstance(c.get("id"), (int, str)):
            report.error(source, line(cat_lines, i), f"categories[{i}] has no id (a number or a string).")
            continue
        ref = labels.resolve(c.get("name")) or labels.resolve(category_key(c["id"]))
        if ref is None:
            report.error(
                source,
                line(cat_lines, i),
                f"category {c.get('name')!r} is not a sub-class or meta-class of {labels.taxonomy}; its boxes are skipped (map it with a label mapping).",
            )
        categories[c["id"]] = (c.get("name"), ref)
    matcher = PhotoMatcher(Photo.objects.filter(case__in=cases_visible_to(user)))
    images: dict = {}
    all_ids = set()  # every image id in the file, matched or not (hashable ones)
    for i, im in enumerate(doc["images"]):
        if isinstance(im, dict) and isinstance(im.get("id"), (int, str)):
            all_ids.add(im["id"])
        if not isinstance(im, dict) or not isinstance(im.get("id"), (int, str)) or not im.get("file_name"):
            report.error(source, line(img_lines, i), f"images[{i}] needs an id (a number or a string) and a file_name.")
            continue
        pk, why = matcher.match(str(im["file_name"]))
        create = (
            image_by_name.get(PurePath(str(im["file_name"]).replace("\\", "/")).name.lower()) if create_cases else None
        )
        if pk is None and create is None:
            report.error(
                source,
                line(img_lines, i),
                why + (" No image file of that name to create it from." if create_cases else ""),
            )
            continue
        images[im["id"]] = {
            "photo": pk,
            "create": create if pk is None else None,
            "file_name": str(im["file_name"]),
            "width": im.get("width"),
            "height": im.get("height"),
            "boxes": [],
            "n_annotations": 0,
            "line": line(img_lines, i),
            "excluded": exclusion_from(str(im.get("derm_excluded") or ""), source, line(img_lines, i), report),
        }
    for i, a in enumerate(doc["annotations"]):
        ln = line(ann_lines, i)
        if not isinstance(a, dict):
            report.error(source, ln, f"annotations[{i}] is not an object.")
            continue
        image_id = a.get("image_id")
        if isinstance(image_id, (int, str)) and image_id in images:
            images[image_id]["n_annotations"] += 1
        else:
            if not isinstance(image_id, (int, str)) or image_id not in all_ids:
                report.error(
                    source, ln, f"annotations[{i}] refers to image_id {a.get('image_id')!r}, which is not in images."
                )
            continue
        cat_id = a.get("category_id")
        cat = categories.get(cat_id) if isinstance(cat_id, (int, str)) else None
        if cat is None and isinstance(cat_id, (int, str)) and labels.resolve(category_key(cat_id)):
            cat = categories[cat_id] = (
                f"category {cat_id}",
                labels.resolve(category_key(cat_id)),
            )  # mapped id not listed
        if cat is None:
            report.error(source, ln, f"annotations[{i}]: unknown category_id {a.get('category_id')!r}.")
            continue
        if cat[1] is None:
            report.error(source, ln, f"annotations[{i}]: label {cat[0]!r} is not in the taxonomy; skipped.")
            continue
        bbox = a.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            report.error(source, ln, f"annotations[{i}]: bbox must be [x, y, width, height] numbers.")
            continue
        attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
        images[image_id]["boxes"].append(
            (
                {
                    "x0": bbox[0],
                    "y0": bbox[1],
                    "x1": bbox[0] + bbox[2],
                    "y1": bbox[1] + bbox[3],
                    "label": cat[1].code,
                    "difficult": bool(attrs.get("difficult")),
                    "truncated": bool(attrs.get("truncated")),
                },
                ln,
                i,
            )
        )
    photo_objs = Photo.objects.in_bulk([im["photo"] for im in images.values() if im["photo"]])
    todo = list(images.values())
    # Commit in chunks of photos, each photo in its own savepoint (as voc_import).
    for start in range(0, len(todo), 100):
        if progress:
            progress("photos", start, len(todo))
        with transaction.atomic():
            for im in todo[start : start + 100]:
                kw = {
                    "report": report,
                    "source": source,
                    "labels": labels,
                    "annotator": annotator,
                    "status": status,
                    "user": user,
                    "replace_accepted": replace_accepted,
                }
                if im["photo"]:
                    _store_image(im, photo_objs[im["photo"]], **kw)
                else:
                    _create_and_store(im, image_files[im["create"]], patient_prefix=patient_prefix, **kw)
    if progress:
        progress("photos", len(todo), len(todo))
    return report


class _NothingStored(Exception):
    pass


def _create_and_store(im: dict, image: bytes | Path, *, patient_prefix: str, **kw) -> None:
    """A new case for an image not in the portal; rolled back (file removed) unless boxes are stored."""
    report, photo = kw["report"], None
    try:
        with transaction.atomic():
            photo = _case_from_image(
                im["create"], image, source=kw["source"], user=kw["user"], patient_prefix=patient_prefix, report=report
            )
            if photo is None or not _store_image(im, photo, **kw):
                raise _NothingStored
    except _NothingStored:
        if photo is not None:
            services.stored_file_delete(photo.file.name, keep_if_referenced=True)
        return
    report.created_cases += 1
    report.created_files.append(photo.file.name)


def _store_image(
    im: dict,
    photo: Photo,
    *,
    report: ImportReport,
    source: str,
    labels: LabelIndex,
    annotator,
    status: str,
    user,
    replace_accepted: bool,
) -> bool:
    if im["width"] and im["height"] and (im["width"], im["height"]) != (photo.width, photo.height):
        report.error(
            source,
            im["line"],
            f"image size {im['width']}×{im['height']} does not match the stored photo {photo.width}×{photo.height}; its boxes are skipped.",
        )
        return False
    clean = []
    for raw, ln, i in im["boxes"]:
        box, errs = box_validate(
            raw, index=i, width=photo.width, height=photo.height, labels=labels, where=f"annotations[{i}]", clip=True
        )
        for e in errs:
            report.error(source, ln, e["message"])
        if box:
            clean.append(box)
    if im["n_annotations"] and not clean:  # an image with no annotations at all says "no lesion" on purpose
        report.error(
            source,
            im["line"],
            f"none of the {im['n_annotations']} annotation(s) of image {im['file_name']!r} could "
            "be imported, so nothing was stored for it.",
        )
        return False
    photos_before = report.photos
    with transaction.atomic():
        store_boxes(
            photo=photo,
            annotator=annotator,
            boxes=clean,
            status=status,
            excluded=im["excluded"],
            report=report,
            source=source,
            by=user,
            replace_accepted=replace_accepted,
        )
    return report.photos > photos_before
