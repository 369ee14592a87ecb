"""How much a model's held-out results move when the photos come from another camera, light or distance.

    python bench/photo_shift.py MODEL DATA_DIR [--group colour|optics|framing|all] [--precision fp32]
                                [--views 1|2|4] [--members N] [--json OUT]

Every held-out photo is changed the same way (after resizing to the model's input size, before the
model's own preprocessing) and the model is evaluated again. Groups of shifts:

- colour: white-balance casts (per-channel gains: warm or cool light, a green cast),
  under-exposure, a washed-out camera (less saturation), a gamma change;
- optics: defocus blur, sensor noise, strong JPEG compression, a lower-resolution camera;
- framing: the lesion photographed from further away (smaller, surrounded by skin: the photo is
  shrunk onto plain skin of its rim's colour; centred, or in the top-left or bottom-right corner, as
  a clinical camera may frame it), closer (a central crop), turned by 90 degrees.

Prints accuracy, balanced accuracy and macro F1 of flat and product fusion per shift, and the
change against the unchanged photos. A model trained with ``--colour-constancy shades_of_gray``
removes per-channel casts before it looks at a photo; the other shifts are not undone by it.
Pixel sizes are of the model's input (160 px by default): blur, noise and JPEG blocks applied there
are harsher than the same applied to a full-size photo that is then reduced (reducing averages
noise and 8x8 JPEG blocks away), so they stand for small or heavily compressed photos. These are
simulated shifts: they say how a model reacts to a change of camera, not how it does on photos of
another clinic.
"""

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M
from inference.ml.data import jpeg_roundtrip
from inference.ml.evaluate import model_probabilities
from inference.ml.taxonomy import fuse


def _u8(x):
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def gains(r, g, b):
    k = np.array([r, g, b], np.float32)
    return lambda im: _u8(im.astype(np.float32) * k)


def saturation(factor):
    def f(im):
        x = im.astype(np.float32)
        grey = x.mean(axis=2, keepdims=True)
        return _u8(grey + factor * (x - grey))

    return f


def gamma(g):
    return lambda im: _u8(255.0 * (im.astype(np.float32) / 255.0) ** g)


def blur(sigma):
    return lambda im: np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma)))


def noise(sigma):
    """Gaussian noise drawn from the photo's own checksum: the same noise for every model and run."""

    def f(im):
        rng = np.random.default_rng(zlib.crc32(im.tobytes()))
        return _u8(im.astype(np.float32) + rng.normal(0.0, sigma, im.shape))

    return f


def jpeg(quality):
    return lambda im: jpeg_roundtrip(im, quality)


def low_resolution(factor):
    def f(im):
        h, w = im.shape[:2]
        small = Image.fromarray(im).resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BOX)
        return np.asarray(small.resize((w, h), Image.BICUBIC))

    return f


def zoom_out(factor, where=(0.5, 0.5)):
    """The photo shrunk to ``factor`` of its side on plain skin (the median colour of its outer rim),
    placed at ``where`` (0..1 of the free space across and down; the centre by default)."""

    def f(im):
        h, w = im.shape[:2]
        r = max(1, min(h, w) // 20)
        rim = np.concatenate(
            [im[:r].reshape(-1, 3), im[-r:].reshape(-1, 3), im[:, :r].reshape(-1, 3), im[:, -r:].reshape(-1, 3)]
        )
        out = np.empty_like(im)
        out[:] = np.median(rim, axis=0).astype(np.uint8)
        sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
        top, left = round((h - sh) * where[1]), round((w - sw) * where[0])
        out[top : top + sh, left : left + sw] = np.asarray(Image.fromarray(im).resize((sw, sh), Image.BILINEAR))
        return out

    return f


def zoom_in(factor):
    """The central ``factor`` of the photo, enlarged to the old size."""

    def f(im):
        h, w = im.shape[:2]
        ch, cw = max(1, round(h * factor)), max(1, round(w * factor))
        top, left = (h - ch) // 2, (w - cw) // 2
        return np.asarray(Image.fromarray(im[top : top + ch, left : left + cw]).resize((w, h), Image.BICUBIC))

    return f


SHIFTS = {
    "colour": {
        "warm light (R x1.2, B x0.8)": gains(1.2, 1.0, 0.8),
        "cool light (R x0.8, B x1.2)": gains(0.8, 1.0, 1.2),
        "green cast (G x1.15)": gains(0.9, 1.15, 0.9),
        "under-exposed (x0.7)": gains(0.7, 0.7, 0.7),
        "washed out (saturation x0.6)": saturation(0.6),
        "gamma 1.4 (darker mid-tones)": gamma(1.4),
    },
    "optics": {
        "defocus (Gaussian blur 1.5 px)": blur(1.5),
        "sensor noise (sd 8 of 255)": noise(8.0),
        "JPEG quality 20": jpeg(20),
        "low resolution (1/3, upscaled)": low_resolution(1 / 3),
    },
    "framing": {
        "further away (x0.6 on plain skin)": zoom_out(0.6),
        "further away, top left (x0.6)": zoom_out(0.6, (0, 0)),
        "further away, bottom right (x0.6)": zoom_out(0.6, (1, 1)),
        "closer (central 70 %)": zoom_in(0.7),
        "turned 90 degrees": lambda im: np.ascontiguousarray(np.rot90(im)),
    },
}


def shifts(group: str) -> dict:
    return {name: fn for g in (SHIFTS if group == "all" else [group]) for name, fn in SHIFTS[g].items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--group", choices=[*SHIFTS, "all"], default="all")
    ap.add_argument("--precision", default=None)
    ap.add_argument(
        "--views", type=int, default=None, choices=[1, 2, 4], help="test-time views (default: the artefact's)"
    )
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows, base = {}, None
    for name, fn in {"unchanged": None, **shifts(a.group)}.items():
        R = model_probabilities(a.model, a.data, a.precision, views=a.views, members=a.members, photo_transform=fn)
        tax, y, P = R["predictor"].taxonomy, R["y"], R["predictor"]
        if base is None:
            print(
                f"{a.model}: {len(y)} photos ({R['scope']}); colour constancy {P.colour!r}, precision {P.precision}, "
                f"{P.size} px, {P.views} view(s)"
            )
            print(
                f"{'shift':36s} {'method':8s} {'acc':>6s} {'balacc':>7s} {'macroF1':>8s}   change in balacc / macroF1"
            )
        rows[name] = {}
        for meth in ("flat", "product"):
            rep = M.classification_report_dict(y, fuse(R["p_coarse"], R["p_fine"], tax, meth), tax.sub_classes)
            r = {k: rep[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
            rows[name][meth] = r
            d = (
                ""
                if base is None
                else (
                    f"   {r['balanced_accuracy'] - base[meth]['balanced_accuracy']:+.3f} / "
                    f"{r['macro_f1'] - base[meth]['macro_f1']:+.3f}"
                )
            )
            print(
                f"{name:36s} {meth:8s} {r['accuracy']:6.3f} {r['balanced_accuracy']:7.3f} {r['macro_f1']:8.3f}{d}",
                flush=True,
            )
        base = base or rows[name]
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "model": Path(a.model).name,
                    "colour_constancy": P.colour,
                    "group": a.group,
                    "views": P.views,
                    "n": int(len(y)),
                    "shifts": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
