"""labelImg / Pascal VOC import: one XML file per photo."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from pathlib import Path, PurePath

from django.core.exceptions import PermissionDenied
from django.db import transaction

from derm_portal import roles

from .. import services
from ..box_validation import LabelIndex, box_validate, label_index
from ..images import ImageRejected
from ..models import AnnotationStatus, Photo
from ..selectors import cases_visible_to
from .limits import check_count, check_size
from .matching import IMAGE_EXTS, PhotoMatcher
from .report import ImportReport
from .store import check_import_rights, exclusion_from, scale, store_boxes
from .xmltree import XMLError, parse_xml


def voc_parse(data: bytes, source: str) -> tuple[dict | None, list[tuple[int | None, str]]]:
    """-> ({filename, width, height, excluded, objects: [{label, x0.., line}]}, [(line, error)])."""
    try:
        root = parse_xml(data)
    except XMLError as exc:
        return None, [(exc.line, str(exc))]
    if root.tag != "annotation":
        return None, [
            (root.line, f"expected an <annotation> root element (labelImg / Pascal VOC), found <{root.tag}>.")
        ]
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
    doc = {
        "filename": filename,
        "width": width,
        "height": height,
        "objects": [],
        "line": root.line,
        "excluded": excl.text.strip() if excl is not None else "",
        "excluded_line": excl.line if excl is not None else None,
    }
    for obj in root.findall("object"):
        bb = obj.find("bndbox")
        item = {
            "label": obj.findtext("name"),
            "line": obj.line,
            "difficult": obj.findtext("difficult", "0") in ("1", "true"),
            "truncated": obj.findtext("truncated", "0") in ("1", "true"),
        }
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
    check_import_rights(user, annotator, status)
    if isinstance(files, (list, tuple)):
        check_count("this import", "XML files", len(files), "MAX_IMAGES")
        check_size("this import", sum(len(data) for _, data in files))
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
        key = None
        if pk is None and create_cases:
            key = image_by_name.get(PurePath(filename).name.lower()) or image_by_stem.get(PurePath(source).stem.lower())
            if key is None:
                report.error(
                    source, doc["line"], f"{why} No image file {filename!r} next to the XML to create it from."
                )
                return
        elif pk is None:
            report.error(source, doc["line"], why)
            return
        created: list[Photo] = []
        try:
            # A savepoint per file: a case created for it is rolled back if none of its boxes is accepted.
            with transaction.atomic():
                if key is not None:
                    photo = _case_from_image(
                        key, images[key], source=source, user=user, patient_prefix=patient_prefix, report=report
                    )
                    if photo is None:
                        return
                    created.append(photo)
                else:
                    photo = photos.get(pk) or Photo.objects.get(pk=pk)
                _boxes_of_file(
                    doc,
                    photo,
                    source=source,
                    filename=filename,
                    report=report,
                    labels=labels,
                    annotator=annotator,
                    status=status,
                    user=user,
                    replace_accepted=replace_accepted,
                )
        except _NothingStored:
            for photo in created:
                services.stored_file_delete(photo.file.name, keep_if_referenced=True)
            return
        for photo in created:
            report.created_cases += 1
            report.created_files.append(photo.file.name)
            matcher.add(photo.pk, photo.original_name)
            photos[photo.pk] = photo

    # Commit in chunks (each file in its own savepoint, so a bad file still leaves the
    # others imported): one commit per file made a 500-photo import disk-bound.
    files = iter(files)
    while chunk := list(islice(files, 100)):
        with transaction.atomic():
            for source, data in chunk:
                one(source, data)
    return report


class _NothingStored(Exception):
    """Leave the file's savepoint: the file is reported and nothing of it is kept."""


def _case_from_image(
    key: str, image: bytes | Path, *, source: str, user, patient_prefix: str, report: ImportReport
) -> Photo | None:
    """A new case holding the image `key`, or None (reported) when it cannot be created."""
    try:
        with transaction.atomic():
            case = services.case_create(patient_code=f"{patient_prefix}{PurePath(key).stem}", created_by=user)
            data = image.read_bytes() if isinstance(image, Path) else image
            # bulk import of training data: no prediction per photo (as import_dataset)
            return services.photo_attach(
                case=case, data=data, filename=PurePath(key).name, uploaded_by=user, run_hooks=False
            )
    except (ImageRejected, services.DuplicatePhoto) as exc:
        report.error(source, None, str(exc))
    except Exception as exc:  # e.g. validation of the generated patient code
        report.error(source, None, f"could not create a case for {key}: {exc}")
    return None


def _boxes_of_file(
    doc: dict,
    photo: Photo,
    *,
    source: str,
    filename: str,
    report: ImportReport,
    labels: LabelIndex,
    annotator,
    status: str,
    user,
    replace_accepted: bool,
) -> None:
    """Validate and store one XML file's boxes on `photo`; raise _NothingStored when the file
    cannot be used (wrong size) or has objects of which none is accepted. A file without
    objects is stored: it says "no lesion" on purpose."""
    sx = sy = 1.0
    if doc["width"] and doc["height"] and (doc["width"], doc["height"]) != (photo.width, photo.height):
        sx, sy = photo.width / doc["width"], photo.height / doc["height"]
        if abs(sx - sy) > 0.01 * max(sx, sy):
            report.error(
                source,
                doc["line"],
                f"size {doc['width']}×{doc['height']} in the XML does not match the photo ({photo.width}×{photo.height}); file skipped.",
            )
            raise _NothingStored
        report.error(
            source,
            doc["line"],
            f"note: boxes scaled from {doc['width']}×{doc['height']} to the stored photo size {photo.width}×{photo.height}.",
        )
    clean = []
    for i, obj in enumerate(doc["objects"]):
        raw = (
            scale(obj, sx, sy)
            if sx != 1.0 and all(obj.get(k) is not None for k in ("x0", "y0", "x1", "y1")) and _all_numbers(obj)
            else obj
        )
        box, errs = box_validate(
            raw,
            index=i,
            width=photo.width,
            height=photo.height,
            labels=labels,
            where=f"object {obj.get('label')!r}",
            clip=True,
        )
        for e in errs:
            report.error(source, obj["line"], e["message"])
        if box:
            clean.append(box)
    if doc["objects"] and not clean:
        report.error(
            source,
            doc["line"],
            f"none of the {len(doc['objects'])} object(s) could be imported, so nothing was "
            f"stored for {filename} (a file without objects records 'no lesion').",
        )
        raise _NothingStored
    excluded = exclusion_from(doc["excluded"], source, doc["excluded_line"], report)
    with transaction.atomic():
        store_boxes(
            photo=photo,
            annotator=annotator,
            boxes=clean,
            status=status,
            excluded=excluded,
            report=report,
            source=source,
            by=user,
            replace_accepted=replace_accepted,
        )


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
    check_count(str(folder), "XML files", len(xmls), "MAX_IMAGES")
    check_size(str(folder), sum(p.stat().st_size for p in xmls))
    images = None
    if kwargs.get("create_cases"):
        images = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_EXTS}
    return voc_import(
        files=((str(p.relative_to(folder)), p.read_bytes()) for p in xmls), user=user, images=images, **kwargs
    )
