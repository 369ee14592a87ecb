"""Bench helper: lesion boxes made in code for dermoscopic photos whose lesion is roughly central,
and real annotator boxes read from a Pascal VOC folder or a box CSV.

``lesion_box(rgb)`` scores every pixel by its colour distance from the skin (the median colour of
the middle of the photo's four edges) plus how much darker than the skin it is, smooths the score,
splits it with Otsu's threshold, drops the dark dermoscope-field corners (dark regions touching a
photo corner), and returns the bounding box of the component that covers most of the photo's
central half. It gives up (box None, with the reason) where that does not describe one lesion.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy import ndimage

from inference.ml.proposal import lens_field, otsu_threshold  # as the editor's proposals split photos

WORK_SIDE = 128  # photos are scored at this long side (the box is scaled back)
BOX_FIELDS = ["image", "width", "height", "x0", "y0", "x1", "y1", "status"]


def lesion_score(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel 'lesion-ness' of a float RGB (H, W, 3) photo: colour distance from the skin plus
    darkness below it, smoothed (hairs and texture fade, the lesion body stays)."""
    h, w, _ = rgb.shape
    b = max(2, round(0.06 * min(h, w)))
    ys, xs = slice(round(0.2 * h), round(0.8 * h)), slice(round(0.2 * w), round(0.8 * w))
    edge = np.concatenate(
        [
            rgb[:b, xs].reshape(-1, 3),
            rgb[-b:, xs].reshape(-1, 3),
            rgb[ys, :b].reshape(-1, 3),
            rgb[ys, -b:].reshape(-1, 3),
        ]
    )
    skin = np.median(edge, axis=0)
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    darker = np.clip(float(skin @ np.array([0.299, 0.587, 0.114])) - lum, 0, None)
    score = np.linalg.norm(rgb - skin, axis=2) + darker
    return ndimage.gaussian_filter(score, sigma=0.02 * max(h, w))


def lesion_box(
    rgb, min_area: float = 0.005, max_cover: float = 0.97, min_separability: float = 0.6, min_contrast: float = 15.0
) -> tuple[tuple[float, float, float, float] | None, str]:
    """((x0, y0, x1, y1) in the photo's pixels, "ok") or (None, why not) for a uint8/float RGB array
    or PIL image of a dermoscopic photo with a roughly central lesion. ``min_contrast``: the two
    Otsu classes' mean scores must differ by this much (RGB units; the faintest of 300 HAM10000
    photos differed by 18, plain skin with noise by 1)."""
    from PIL import Image

    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.asarray(rgb, np.uint8))
    im = im.convert("RGB")
    W, H = im.size
    s = min(1.0, WORK_SIDE / max(W, H))
    small = im.resize((max(1, round(W * s)), max(1, round(H * s))), Image.BILINEAR) if s < 1 else im
    a = np.asarray(small, np.float64)
    h, w, _ = a.shape
    score = lesion_score(a)
    field_stop = lens_field(a @ np.array([0.299, 0.587, 0.114]))  # the dermoscope's dark field
    inside = score[~field_stop]
    if inside.size < 0.3 * score.size:
        return None, "dark field covers most of the photo"
    t, sep = otsu_threshold(inside)
    if sep < min_separability:
        return None, f"no clear lesion/skin split (separability {sep:.2f})"
    contrast = float(inside[inside > t].mean() - inside[inside <= t].mean())
    if contrast < min_contrast:  # a unimodal score (skin texture only) still splits somewhere
        return None, f"no lesion stands out from the skin (contrast {contrast:.0f} < {min_contrast:.0f})"
    mask = (score > t) & ~field_stop
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = ndimage.binary_fill_holes(mask)
    lab, n = ndimage.label(mask)
    if n == 0:
        return None, "no region above the threshold"
    centre = np.zeros_like(mask)
    centre[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    overlap = ndimage.sum(centre, lab, index=np.arange(1, n + 1))
    if overlap.max() <= 0:
        return None, "no region in the central half"
    k = int(np.argmax(overlap)) + 1
    comp = lab == k
    if comp.mean() < min_area:
        return None, f"region too small ({comp.mean():.3f} of the photo)"
    yy, xx = np.nonzero(comp)
    x0, x1, y0, y1 = xx.min(), xx.max() + 1, yy.min(), yy.max() + 1
    if (x1 - x0) >= max_cover * w and (y1 - y0) >= max_cover * h:
        return None, "region spans the whole photo"
    return (
        x0 / s if s < 1 else float(x0),
        y0 / s if s < 1 else float(y0),
        min(W, x1 / s) if s < 1 else float(x1),
        min(H, y1 / s) if s < 1 else float(y1),
    ), "ok"


def write_boxes_csv(path: Path, rows: list[dict]) -> None:
    """One row per photo (``BOX_FIELDS``); failed photos keep their reason in ``status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=BOX_FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    tmp.replace(path)


def read_boxes(path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Boxes per image file name (without folders) from a Pascal VOC folder (``*.xml``, labelImg)
    or a CSV with columns image,x0,y0,x1,y1 (several rows per image allowed; rows whose status is
    not "ok" are skipped). Raises ValueError naming the file and row/field on bad input."""
    p = Path(path)
    out: dict[str, list] = {}
    if p.is_dir():
        files = sorted(p.glob("*.xml"))
        if not files:
            raise ValueError(f"{p}: no Pascal VOC *.xml files")
        for f in files:
            try:
                root = ET.parse(f).getroot()
            except ET.ParseError as e:
                raise ValueError(f"{f}: not valid XML ({e})") from None
            name = (root.findtext("filename") or f.with_suffix(".jpg").name).strip()
            for i, obj in enumerate(root.iter("object")):
                bb = obj.find("bndbox")
                try:
                    box = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                except (AttributeError, TypeError, ValueError):
                    raise ValueError(f"{f}: object {i + 1} lacks a numeric bndbox xmin/ymin/xmax/ymax") from None
                out.setdefault(Path(name).name, []).append(box)
        return out
    with open(p, newline="", encoding="utf-8-sig") as f:
        rd = csv.DictReader(f)
        need = {"image", "x0", "y0", "x1", "y1"}
        if not need <= set(rd.fieldnames or []):
            raise ValueError(f"{p}: needs columns {sorted(need)}, has {rd.fieldnames}")
        for line, row in enumerate(rd, start=2):
            if row.get("status", "ok") not in ("ok", ""):
                continue
            try:
                box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            except ValueError:
                raise ValueError(f"{p}, row {line}: x0/y0/x1/y1 must be numbers") from None
            out.setdefault(Path(row["image"]).name, []).append(box)
    return out
