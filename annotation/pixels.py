"""Box coordinates: sub-pixel values as other tools' files give them (COCO floats, YOLO
normalised, CVAT / Label Studio VOC floats), stored as floats of the original photo's pixels.

Every coordinate is rounded to 1e-6 px on the way in: far finer than any file or screen
needs, and it makes x1 = x + w on import and w = x1 - x0 on export give back the file's own
decimals (a float sum alone adds ~1e-14 of noise that would show in every exported number).
A fixed 1/100 px was not enough: COCO files carry values such as 40.125."""

from __future__ import annotations

import math

DECIMALS = 6


def quantise(value: float) -> float:
    """A coordinate (or width) on the 1e-6 px grid; idempotent."""
    return round(float(value), DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def number(value: float) -> int | float:
    """For files and JSON: a whole pixel as an int (10, as before), else the sub-pixel float."""
    value = quantise(value)
    return int(value) if value.is_integer() else value


def text(value: float) -> str:
    """For XML and CSV cells: '10' for a whole pixel, else the shortest decimal ('10.25')."""
    return str(number(value))


def outward(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """The smallest whole-pixel rectangle holding the box (for crops)."""
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
