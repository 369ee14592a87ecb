"""Benchmark: the proposed first box against lesion boxes, straight from an artefact (no portal database).

    python bench/proposal_iou.py MODEL DATA [--n 150] [--boxes VOC_DIR|CSV] [--levels 0.3 0.5]
                                 [--further-away] [--seed 0]

The photos and boxes are those of bench/gradcam_placement.py (the artefact's held-out photos when DATA
is its training data; annotator boxes from --boxes, else boxes made in code). Per photo the serving
Grad-CAM map of the top sub-class, stored as the portal stores it (32x32), gives the proposals:
"outline" (what the editor offers, ``inference.ml.proposal.propose_box``: the photo's lesion region
under the map, else the map's box) and "map" (the box around the smoothed map's region above a share of its
peak, at each --levels). Beside them the same two from a centred Gaussian map instead of the model's
(what "lesions are central" alone proposes). Printed per proposal: IoU with the best-matching lesion
box (mean with a 95 % bootstrap CI over photos, median, share >= 0.5 and >= 0.7) and, for "outline",
how often the photo's outline was used. --further-away shrinks every photo to half its side on plain
skin of its rim's colour at a random place (the lesion photographed from further away and off centre,
as clinical cameras do; the boxes move with it). How often annotators accept a proposal unchanged
needs their real work: bench/proposal_acceptance.py reads that from the portal's database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def summary(ious: list[float], rng) -> str:
    lo, hi = boot_ci(ious, rng)
    return (
        f"mean {statistics.mean(ious):.3f} [{lo:.3f}, {hi:.3f}]  median {statistics.median(ious):.3f}  "
        f">= 0.5 {sum(v >= 0.5 for v in ious) / len(ious):6.1%}  >= 0.7 {sum(v >= 0.7 for v in ious) / len(ious):6.1%}"
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--boxes", default=None)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--further-away", action="store_true", help="photos shrunk onto skin at a random place")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.base")
    import django

    django.setup()
    from gradcam_placement import reference_maps, select_photos

    from annotation.agreement import iou
    from inference.ml.explain import default_settings, explain
    from inference.ml.predict import Predictor

    P = Predictor.load(a.model)
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    photos, source = select_photos(P, a.data, a.n, a.seed, a.boxes, results, Path(a.model).resolve().name, False)
    cfg = default_settings()
    print(f"{len(photos)} photos; {source}; maps: {cfg.spec}; further away: {a.further_away}")
    import numpy as np

    from inference.ml.explain import downsample
    from inference.ml.proposal import map_box, propose_box

    rng = np.random.default_rng(a.seed)
    rows = []
    for _rec, img, boxes in photos:
        if a.further_away:
            img, boxes = further_away(img, boxes, rng)
        d = P.predict_one(img)
        cam = downsample(explain(P, img, [d.ranked[0].sub_class], [], cfg)[0].cam, 32)
        rows.append((img, boxes, cam))
    centre = reference_maps(32)["centre"]

    def best(box, boxes):
        return max((iou(box, tuple(b)) for b in boxes), default=0.0) if box else 0.0

    out = {}
    for name, pick in (("model", lambda r: r[2]), ("centre", lambda r: centre)):
        ious, used = [], 0
        for r in rows:
            box, how = propose_box(r[0], pick(r))
            ious.append(best(box, r[1]))
            used += how == "outline"
        out[("outline", name)] = ious
        print(f"outline   {name:7s} IoU {summary(ious, rng)}  photo's outline used {used / len(rows):6.1%}")
        for level in a.levels:
            ious = [best(map_box(pick(r), *r[0].size, level), r[1]) for r in rows]
            out[(level, name)] = ious
            print(f"map {level:.2f}  {name:7s} IoU {summary(ious, rng)}")
    for level in a.levels:
        diff = np.array(out[("outline", "model")]) - np.array(out[(level, "model")])
        lo, hi = boot_ci(diff, rng)
        print(f"outline - map {level:.2f} (model), paired: {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    diff = np.array(out[("outline", "model")]) - np.array(out[("outline", "centre")])
    lo, hi = boot_ci(diff, rng)
    print(f"outline: model's map - centred Gaussian, paired: {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return out


def boot_ci(values, rng, n: int = 2000) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, float)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def further_away(img, boxes, rng):
    """The photo at half its side on plain skin of its rim's colour (photo_shift's "further away"),
    at a random place; boxes moved with it."""
    import numpy as np
    from photo_shift import zoom_out
    from PIL import Image

    w, h = img.size
    sw, sh = round(w * 0.5), round(h * 0.5)
    x, y = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
    canvas = zoom_out(0.5, (x / max(1, w - sw), y / max(1, h - sh)))(np.asarray(img))
    moved = [(x + b0 * sw / w, y + b1 * sh / h, x + b2 * sw / w, y + b3 * sh / h) for b0, b1, b2, b3 in boxes]
    return Image.fromarray(canvas), moved


if __name__ == "__main__":
    main()
