"""Lesion crops: training images cut out of photos by their accepted boxes.

`crop_geometry` is the pure rectangle arithmetic (margin as a fraction of the box size on
each side, clamped to the photo); `crops_make` writes the crops through Django storage,
each linked to its photo, box and case, idempotently (one crop per box and margin;
re-running updates crops whose box moved and removes crops whose box is no longer
accepted); `crops_export_folder` and `crops_export_zip` write the engine's generic data
folder through `annotation.datafolder` (the same writer as the portal's training runs).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image, ImageOps

from derm_portal import dispatch

from . import pixels
from .models import AnnotationStatus, Box, Crop, Photo


@dataclass
class CropReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    too_small: int = 0
    removed: int = 0
    photos: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (
            f"{self.created} crop(s) created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.too_small} box(es) below the minimum size, {self.removed} stale crop(s) removed, from {self.photos} photo(s)"
        )


def crop_geometry(
    *, x0: float, y0: float, x1: float, y1: float, width: int, height: int, margin: float = 0.0
) -> tuple[int, int, int, int]:
    """The crop rectangle in whole pixels: the box grown by `margin` x its width/height on
    each side, a sub-pixel edge rounded outward, clamped to the photo (0..width, 0..height)."""
    if margin < 0:
        raise ValueError("margin must be >= 0")
    mx, my = round((x1 - x0) * margin), round((y1 - y0) * margin)
    left, top, right, bottom = pixels.outward(x0 - mx, y0 - my, x1 + mx, y1 + my)
    return max(0, left), max(0, top), min(width, right), min(height, bottom)


def box_big_enough(box, min_size: int) -> bool:
    return min(box.x1 - box.x0, box.y1 - box.y0) >= min_size


def accepted_boxes(photos=None):
    qs = Box.objects.filter(annotation__status=AnnotationStatus.ACCEPTED, annotation__excluded=False)
    if photos is not None:
        qs = qs.filter(photo__in=photos)
    return qs.select_related("photo", "sub_class", "meta_class").order_by("photo_id", "id")


def crops_make(*, margin: float = 0.0, min_size: int = 0, photos=None, quality: int = 95) -> CropReport:
    """Create/refresh the crops of every accepted, non-excluded box (of `photos`)."""
    if margin < 0 or margin > 5:
        raise ValueError("margin is a fraction of the box size between 0 and 5 (e.g. 0.1 = 10 %).")
    report = CropReport()
    boxes = list(accepted_boxes(photos))
    wanted_ids = {b.pk for b in boxes}
    stale = Crop.objects.filter(margin=margin).exclude(box_id__in=wanted_ids)
    if photos is not None:
        stale = stale.filter(photo__in=photos)
    for crop in stale:
        crop.file.delete(save=False)
        crop.delete()
        report.removed += 1
    existing = {c.box_id: c for c in Crop.objects.filter(margin=margin, box_id__in=wanted_ids)}
    by_photo: dict[int, list[Box]] = defaultdict(list)
    for b in boxes:
        by_photo[b.photo_id].append(b)
    for _photo_id, photo_boxes in by_photo.items():
        photo: Photo = photo_boxes[0].photo
        image = None
        report.photos += 1
        for box in photo_boxes:
            if not box_big_enough(box, min_size):
                report.too_small += 1
                if box.pk in existing:
                    existing[box.pk].file.delete(save=False)
                    existing[box.pk].delete()
                    report.removed += 1
                continue
            rect = crop_geometry(
                x0=box.x0, y0=box.y0, x1=box.x1, y1=box.y1, width=photo.width, height=photo.height, margin=margin
            )
            crop = existing.get(box.pk)
            labels_same = crop is not None and (crop.sub_class_id, crop.meta_class_id) == (
                box.sub_class_id,
                box.meta_class_id,
            )
            if crop is not None and (crop.x0, crop.y0, crop.x1, crop.y1) == rect and labels_same:
                report.unchanged += 1
                continue
            if image is None:
                with photo.file.open("rb") as fh:
                    image = ImageOps.exif_transpose(Image.open(fh)).convert("RGB")
                if image.size != (photo.width, photo.height):  # stored photo differs from its recorded size
                    image = image.resize((photo.width, photo.height))
            out = io.BytesIO()
            image.crop(rect).save(out, "JPEG", quality=quality)
            with transaction.atomic():
                if crop is None:
                    crop = Crop(photo=photo, case_id=photo.case_id, box=box, margin=margin)
                    report.created += 1
                else:
                    crop.file.delete(save=False)
                    report.updated += 1
                crop.x0, crop.y0, crop.x1, crop.y1 = rect
                crop.width, crop.height = rect[2] - rect[0], rect[3] - rect[1]
                crop.sub_class_id, crop.meta_class_id = box.sub_class_id, box.meta_class_id
                crop.file.save(f"crop-{box.pk}-m{round(margin * 100)}.jpg", ContentFile(out.getvalue()), save=False)
                crop.save()
    return report


CROP_JOB = "crops"
CROP_BUSY = timedelta(hours=2)  # a crop run that started longer ago than this is taken to have died


def crops_request(*, margin: float, min_size: int) -> None:
    """Record a crop request (pending until a run that starts after it finishes) and send it; the
    reconciler (derm_portal.reconcile) sends it again if the message is lost."""
    key = f"{margin:g}:{min_size}"
    dispatch.request(CROP_JOB, key, {"margin": margin, "min_size": min_size})
    transaction.on_commit(lambda: dispatch.send(make_crops_task.name, margin=margin, min_size=min_size))


@shared_task(name="annotation.tasks.make_crops")
def make_crops_task(*, margin: float = 0.0, min_size: int = 0) -> dict:
    """Thin and idempotent: running it twice leaves the same crops; a duplicate message arriving
    while a run with the same settings is in progress does nothing."""
    key = f"{margin:g}:{min_size}"
    started = dispatch.start(CROP_JOB, key, CROP_BUSY)
    if started is None:
        return {"busy": True}
    try:
        return crops_make(margin=margin, min_size=min_size).as_dict()
    finally:  # a failing run is not re-sent forever; the next request runs it again
        dispatch.complete(CROP_JOB, key, started)


# after the data folder's own columns (annotation.datafolder.LABEL_COLUMNS)
EXPORT_EXTRA_COLUMNS = ("photo_id", "box_id", "margin")


def _export_extra(crop) -> dict:
    return {"photo_id": crop.photo_id, "box_id": crop.box_id or "", "margin": crop.margin}


def crops_export_rows(*, level: str = "sub", margin: float | None = None):
    """(crop, label, case_id) for every crop, skipping meta-only crops at sub level."""
    qs = Crop.objects.select_related(
        "case", "case__patient", "photo", "photo__case", "photo__case__patient", "sub_class", "meta_class"
    ).order_by("case_id", "photo_id", "id")
    if margin is not None:
        qs = qs.filter(margin=margin)
    for crop in qs:
        if level == "meta":
            label = (
                crop.meta_class.code
                if crop.meta_class_id
                else (crop.sub_class.meta_class.code if crop.sub_class_id else "")
            )
        else:
            label = crop.sub_class.code if crop.sub_class_id else ""
        yield crop, label, crop.case.reference


def _export(writer, *, level: str, margin: float | None) -> dict:
    written = skipped = 0
    with writer:
        for crop, label, _ in crops_export_rows(level=level, margin=margin):
            if not label:
                skipped += 1
                continue
            writer.add(name=f"crop-{crop.pk}.jpg", file=crop.file, label=label, photo=crop.photo, **_export_extra(crop))
            written += 1
    return {"crops": written, "skipped_meta_only": skipped}


def crops_export_folder(*, folder: Path, level: str = "sub", margin: float | None = None) -> dict:
    """Write the engine's data folder `folder/images/*.jpg` + `folder/labels.csv` (annotation.datafolder)."""
    from .datafolder import DataFolderWriter

    if level not in ("sub", "meta"):
        raise ValueError("level is 'sub' or 'meta'")
    folder = Path(folder)
    res = _export(DataFolderWriter(folder, extra_columns=EXPORT_EXTRA_COLUMNS), level=level, margin=margin)
    return {**res, "folder": str(folder)}


def crops_export_zip(fh, *, level: str = "sub", margin: float | None = None) -> dict:
    """The same data folder as a zip archive (folder `crops/`) written to the file object `fh`."""
    import zipfile

    from .datafolder import DataFolderZipWriter

    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        return _export(DataFolderZipWriter(zf, "crops", extra_columns=EXPORT_EXTRA_COLUMNS), level=level, margin=margin)
