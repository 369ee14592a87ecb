"""YOLO boxes (Darknet / Ultralytics text files): export as a zip, import a zip or folder.

Layout: `classes.txt` (one class name per line, line n is class id n; labelImg's YOLO mode)
and `data.yaml` (Ultralytics), `labels/<image stem>.txt` with one `class cx cy w h` line per
box, all four normalised to 0..1, and with images `images/<name>`. Coordinates are written
from the stored (sub-pixel) values with up to 12 decimals (trailing zeros dropped): within
5e-13 of the photo size, so every stored coordinate (a 1e-6 px grid, annotation/pixels.py)
comes back exactly on import for photos up to 100,000 px wide."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePath

from django.db import transaction

from ..box_validation import AnnotationError, LabelIndex, box_validate, label_index
from ..models import AnnotationStatus, Photo, PhotoAnnotation
from ..selectors import cases_visible_to
from .export import _boxes_of, export_names
from .limits import check_count, check_size
from .matching import PhotoMatcher
from .report import ImportReport
from .store import check_import_rights, store_boxes


def _classes(anns: list[PhotoAnnotation], boxes: dict, labels: LabelIndex) -> list[str]:
    """The taxonomy's codes (meta-classes and sub-classes, in taxonomy order), then any other code used."""
    refs = sorted(
        {id(r): r for r in labels.by_key.values()}.values(),
        key=lambda r: (r.meta_class.order, r.sub_class is not None, r.sub_class.order if r.sub_class else 0),
    )
    names = list(dict.fromkeys(r.code for r in refs))
    for a in anns:
        for b in boxes.get(a.pk, []):
            if b.label_code not in names:
                names.append(b.label_code)
    return names


def _unit(value: float) -> str:
    """A normalised coordinate: 12 decimals, trailing zeros dropped ('0.5', '0.111111111111')."""
    return f"{value:.12f}".rstrip("0").rstrip(".") or "0"


def export_yolo_zip(
    anns: list[PhotoAnnotation], *, with_images: bool = False, labels: LabelIndex | None = None
) -> bytes:
    labels = labels or label_index()
    names, boxes = export_names(anns), _boxes_of(anns)
    classes = _classes(anns, boxes, labels)
    index = {c: i for i, c in enumerate(classes)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("classes.txt", "\n".join(classes) + "\n")
        zf.writestr(
            "data.yaml",
            "path: .\ntrain: images\nval: images\nnames:\n" + "".join(f"  {i}: {c}\n" for i, c in enumerate(classes)),
        )
        for a in anns:
            w, h = a.photo.width, a.photo.height
            lines = [
                " ".join(
                    [str(index[b.label_code])]
                    + [
                        _unit(v)
                        for v in ((b.x0 + b.x1) / 2 / w, (b.y0 + b.y1) / 2 / h, (b.x1 - b.x0) / w, (b.y1 - b.y0) / h)
                    ]
                )
                for b in boxes.get(a.pk, [])
            ]
            zf.writestr(f"labels/{PurePath(names[a.photo_id]).stem}.txt", "".join(line + "\n" for line in lines))
            if with_images:
                with a.photo.file.open("rb") as fh:
                    zf.writestr(f"images/{names[a.photo_id]}", fh.read())
    return out.getvalue()


def yolo_files_from_zip(data: bytes, source: str) -> tuple[list[str] | None, dict[str, bytes]]:
    """(class names or None, label file name -> bytes) of a YOLO zip."""
    check_size(source, len(data))
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise AnnotationError(f"{source}: not a zip file (expected classes.txt and one .txt per image).")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [m for m in zf.namelist() if not m.endswith("/")]
        classes = next((m for m in members if PurePath(m).name.lower() in ("classes.txt", "obj.names")), None)
        texts = {m: zf.read(m) for m in members if m.lower().endswith(".txt") and m != classes}
        return (zf.read(classes).decode("utf-8-sig").split() if classes else None), texts


def yolo_files_from_folder(folder: Path) -> tuple[list[str] | None, dict[str, bytes]]:
    folder = Path(folder)
    classes = next((p for p in folder.rglob("*") if p.name.lower() in ("classes.txt", "obj.names")), None)
    texts = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.txt")) if p != classes}
    return (classes.read_text(encoding="utf-8-sig").split() if classes else None), texts


def yolo_import(
    *,
    files: dict[str, bytes],
    classes: list[str] | None,
    user,
    annotator=None,
    status: str = AnnotationStatus.ANNOTATED,
    replace_accepted: bool = False,
    labels: LabelIndex | None = None,
) -> ImportReport:
    """Import YOLO label files (one per image, matched to portal photos by the image stem).
    A class id is looked up in `classes` and then in the taxonomy (or label mapping); a class
    id with no name can still be mapped as `#<id>`."""
    annotator = annotator or user
    check_import_rights(user, annotator, status)
    check_count("this import", "label files", len(files), "MAX_IMAGES")
    labels = labels or label_index()
    report = ImportReport()
    if classes is None:
        report.error(
            "classes.txt", None, "no classes.txt (or obj.names): class ids are taken as '#<id>' of the label mapping."
        )
    matcher = PhotoMatcher(Photo.objects.filter(case__in=cases_visible_to(user)))
    for source, data in sorted(files.items()):
        report.files += 1
        pk, why = matcher.match(PurePath(source).stem + ".jpg")
        if pk is None:
            report.error(source, None, why)
            continue
        photo = Photo.objects.get(pk=pk)
        clean, n = [], 0
        for ln, raw in enumerate(data.decode("utf-8-sig", errors="replace").splitlines(), 1):
            parts = raw.split()
            if not parts:
                continue
            n += 1
            try:
                cls, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) != 5:
                    raise ValueError
            except ValueError:
                report.error(source, ln, "expected 'class cx cy width height' (a class id and four numbers 0..1).")
                continue
            name = classes[cls] if classes and 0 <= cls < len(classes) else None
            label = (
                name
                if name and labels.resolve(name)
                else (f"#{cls}" if labels.resolve(f"#{cls}") else name or f"#{cls}")
            )
            raw_box = {
                "x0": (cx - bw / 2) * photo.width,
                "y0": (cy - bh / 2) * photo.height,
                "x1": (cx + bw / 2) * photo.width,
                "y1": (cy + bh / 2) * photo.height,
                "label": label,
            }
            box, errs = box_validate(
                raw_box,
                index=n - 1,
                width=photo.width,
                height=photo.height,
                labels=labels,
                where=f"class {label}",
                clip=True,
            )
            for e in errs:
                report.error(source, ln, e["message"])
            if box:
                clean.append(box)
        if n and not clean:
            report.error(source, None, f"none of the {n} box(es) could be imported, so nothing was stored for it.")
            continue
        with transaction.atomic():
            store_boxes(
                photo=photo,
                annotator=annotator,
                boxes=clean,
                status=status,
                excluded="",
                report=report,
                source=source,
                by=user,
                replace_accepted=replace_accepted,
            )
    return report
