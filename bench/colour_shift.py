"""How much a model's held-out results move when the photos come from another camera or light.

    python bench/colour_shift.py MODEL DATA_DIR [--precision fp32] [--members N] [--json OUT]

Every held-out photo is changed the same way (after resizing, before the model's own
preprocessing) and the model is evaluated again: white-balance casts (per-channel gains: warm or
cool light, a green cast), under-exposure, a washed-out camera (less saturation) and a gamma change.
Prints accuracy, balanced accuracy and macro F1 of flat and product fusion per shift, and the
change against the unchanged photos. A model trained with ``--colour-constancy shades_of_gray``
removes per-channel casts before it looks at a photo; the other shifts are not undone by it.
These are simulated shifts: they say how a model reacts to colour, not how it does on photos of
another clinic.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml import metrics as M  # noqa: E402
from inference.ml.evaluate import model_probabilities  # noqa: E402
from inference.ml.taxonomy import fuse  # noqa: E402


def gains(r, g, b):
    k = np.array([r, g, b], np.float32)
    return lambda im: np.clip(im.astype(np.float32) * k + 0.5, 0, 255).astype(np.uint8)


def saturation(factor):
    def f(im):
        x = im.astype(np.float32)
        grey = x.mean(axis=2, keepdims=True)
        return np.clip(grey + factor * (x - grey) + 0.5, 0, 255).astype(np.uint8)
    return f


def gamma(g):
    return lambda im: np.clip(255.0 * (im.astype(np.float32) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)


SHIFTS = {
    "unchanged": None,
    "warm light (R x1.2, B x0.8)": gains(1.2, 1.0, 0.8),
    "cool light (R x0.8, B x1.2)": gains(0.8, 1.0, 1.2),
    "green cast (G x1.15)": gains(0.9, 1.15, 0.9),
    "under-exposed (x0.7)": gains(0.7, 0.7, 0.7),
    "washed out (saturation x0.6)": saturation(0.6),
    "gamma 1.4 (darker mid-tones)": gamma(1.4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows, base = {}, None
    for name, fn in SHIFTS.items():
        R = model_probabilities(a.model, a.data, a.precision, members=a.members, photo_transform=fn)
        tax, y, P = R["predictor"].taxonomy, R["y"], R["predictor"]
        if base is None:
            print(f"{a.model}: {len(y)} photos ({R['scope']}); colour constancy {P.colour!r}, precision {P.precision}")
            print(f"{'shift':32s} {'method':8s} {'acc':>6s} {'balacc':>7s} {'macroF1':>8s}   change in balacc / macroF1")
        rows[name] = {}
        for meth in ("flat", "product"):
            rep = M.classification_report_dict(y, fuse(R["p_coarse"], R["p_fine"], tax, meth), tax.sub_classes)
            r = {k: rep[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
            rows[name][meth] = r
            d = "" if base is None else (f"   {r['balanced_accuracy'] - base[meth]['balanced_accuracy']:+.3f} / "
                                         f"{r['macro_f1'] - base[meth]['macro_f1']:+.3f}")
            print(f"{name:32s} {meth:8s} {r['accuracy']:6.3f} {r['balanced_accuracy']:7.3f} {r['macro_f1']:8.3f}{d}",
                  flush=True)
        base = base or rows[name]
    if a.json:
        Path(a.json).write_text(json.dumps({"model": Path(a.model).name, "colour_constancy": P.colour,
                                            "n": int(len(y)), "shifts": rows}, indent=1))


if __name__ == "__main__":
    main()
