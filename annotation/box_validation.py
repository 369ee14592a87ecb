"""Box validation against the photo and the taxonomy's labels (boxes.py saves what passes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import pixels
from .models import (
    BoxOrigin,
    MetaClass,
    Photo,
    SubClass,
    Taxonomy,
)
from .selectors import taxonomy_default


class AnnotationError(ValueError):
    """Invalid boxes or a forbidden transition; `errors` lists one dict per problem
    ({"box": index or None, "field": name, "message": text})."""

    def __init__(self, errors: list[dict] | str):
        if isinstance(errors, str):
            errors = [{"box": None, "field": "", "message": errors}]
        self.errors = errors
        super().__init__("; ".join(e["message"] for e in errors))


# --------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelRef:
    sub_class: SubClass | None
    meta_class: MetaClass

    @property
    def code(self) -> str:
        return self.sub_class.code if self.sub_class else self.meta_class.code


class LabelIndex:
    """Codes (and display names, case-insensitive) of one taxonomy -> LabelRef."""

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self.by_key: dict[str, LabelRef] = {}
        metas = {m.pk: m for m in MetaClass.objects.filter(taxonomy=taxonomy)}
        for m in metas.values():
            ref = LabelRef(None, m)
            self.by_key.setdefault(m.display_name.lower(), ref)
            self.by_key[m.code.lower()] = ref
        for s in SubClass.objects.filter(taxonomy=taxonomy):
            ref = LabelRef(s, metas[s.meta_class_id])
            self.by_key.setdefault(s.display_name.lower(), ref)
            self.by_key[s.code.lower()] = ref
        self.sub_by_pk = {r.sub_class.pk: r for r in self.by_key.values() if r.sub_class}
        self.meta_by_pk = {m.pk: LabelRef(None, m) for m in metas.values()}

    def resolve(self, code: Any) -> LabelRef | None:
        if not isinstance(code, str):
            return None
        return self.by_key.get(code.strip().lower())

    def codes(self) -> list[str]:
        return sorted({r.code for r in self.by_key.values()})


def label_index(taxonomy: Taxonomy | None = None) -> LabelIndex:
    taxonomy = taxonomy or taxonomy_default()
    if taxonomy is None:
        raise AnnotationError("No taxonomy is loaded; load one before annotating (manage.py load_taxonomy).")
    return LabelIndex(taxonomy)


# --------------------------------------------------------------------------- validation
@dataclass
class CleanBox:
    x0: float  # pixels of the original photo, sub-pixel kept (annotation/pixels.py)
    y0: float
    x1: float
    y1: float
    label: LabelRef
    id: int | None = None
    difficult: bool = False
    truncated: bool = False
    clipped: bool = False  # reached past the photo's edge and was cut to it (imports only)
    source_box: int | None = None  # pre-filled from this box of another annotator
    proposed: bool = False  # the model's proposal, accepted as is


def _num(value: Any) -> float | None:
    """A finite number, or None (NaN and infinities, which JSON and float() accept, are not coordinates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        value = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        return None
    return value if math.isfinite(value) else None


def box_validate(
    raw: dict, *, index: int, width: int, height: int, labels: LabelIndex, where: str = "", clip: bool = False
) -> tuple[CleanBox | None, list[dict]]:
    """Check one box dict {x0,y0,x1,y1,label[,id,difficult,truncated]}; coordinates keep
    their sub-pixel values (on the 1e-6 px grid of annotation/pixels.py). With clip (imports,
    as CVAT and Label Studio do), a box reaching past the photo's edge is cut to it and marked
    clipped; only a box wholly outside is refused.
    Returns (box or None, errors)."""
    prefix = where or f"Box {index + 1}"
    errors: list[dict] = []

    def err(field: str, message: str):
        errors.append({"box": index, "field": field, "message": f"{prefix}: {message}"})

    if not isinstance(raw, dict):
        err("", "expected an object with x0, y0, x1, y1 and label.")
        return None, errors
    coords = {}
    for key in ("x0", "y0", "x1", "y1"):
        v = _num(raw.get(key))
        if v is None:
            err(key, f"{key} is missing or not a number.")
        else:
            coords[key] = pixels.quantise(v)
    label = labels.resolve(raw.get("label") or raw.get("sub_class") or raw.get("meta_class"))
    if label is None:
        got = raw.get("label") or raw.get("sub_class") or raw.get("meta_class")
        err(
            "label",
            f"label {got!r} is not a sub-class or meta-class of {labels.taxonomy}."
            if got
            else "a label (sub-class or meta-class) is required.",
        )
    if len(coords) == 4:
        x0, y0, x1, y1 = coords["x0"], coords["y0"], coords["x1"], coords["y1"]
        at = f"({pixels.text(x0)},{pixels.text(y0)})-({pixels.text(x1)},{pixels.text(y1)})"
        outside = x0 < 0 or y0 < 0 or x1 > width or y1 > height
        if x0 >= x1 or y0 >= y1:
            err("x1", f"empty box {at}; x1 must be greater than x0 and y1 greater than y0.")
        elif outside and clip:
            cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
            if cx0 >= cx1 or cy0 >= cy1:
                err("x0", f"box {at} lies wholly outside the photo ({width}×{height} pixels).")
            else:
                coords.update(x0=cx0, y0=cy0, x1=cx1, y1=cy1)
        elif outside:
            err("x0", f"box {at} is outside the photo ({width}×{height} pixels).")
    if errors:
        return None, errors
    box_id, source = raw.get("id"), raw.get("source_box")
    return CleanBox(
        coords["x0"],
        coords["y0"],
        coords["x1"],
        coords["y1"],
        label,
        id=box_id if isinstance(box_id, int) and not isinstance(box_id, bool) else None,
        difficult=bool(raw.get("difficult")),
        truncated=bool(raw.get("truncated")),
        clipped=(coords["x0"], coords["y0"], coords["x1"], coords["y1"]) != (x0, y0, x1, y1),
        source_box=source if isinstance(source, int) and not isinstance(source, bool) else None,
        proposed=raw.get("origin") == BoxOrigin.PROPOSED,
    ), []


def boxes_validate(raw_boxes: Any, *, photo: Photo, labels: LabelIndex) -> list[CleanBox]:
    if not isinstance(raw_boxes, list):
        raise AnnotationError("boxes must be a list.")
    clean, errors = [], []
    for i, raw in enumerate(raw_boxes):
        box, errs = box_validate(raw, index=i, width=photo.width, height=photo.height, labels=labels)
        errors.extend(errs)
        if box:
            clean.append(box)
    if errors:
        raise AnnotationError(errors)
    return clean
