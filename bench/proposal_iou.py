"""Benchmark: the proposed first box against lesion boxes, straight from an artefact (no portal database).

    python bench/proposal_iou.py MODEL DATA [--n 150] [--boxes VOC_DIR|CSV] [--levels 0.3 0.5 0.7] [--seed 0]

The photos and boxes are those of bench/gradcam_placement.py (the artefact's held-out photos when DATA
is its training data; annotator boxes from --boxes, else boxes made in code). Per photo the serving
Grad-CAM map of the top sub-class gives the proposal the editor would offer (annotation/proposals.py
``cam_box`` at each level of the peak); printed per level: IoU with the best-matching lesion box (mean,
median, share >= 0.5 and >= 0.7), beside the same for a centred Gaussian map (what "lesions are
central" alone proposes). How often annotators accept a proposal unchanged needs their real work:
bench/proposal_acceptance.py reads that from the portal's database.
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


def summary(ious: list[float]) -> str:
    return (
        f"mean {statistics.mean(ious):.3f}  median {statistics.median(ious):.3f}  "
        f">= 0.5 {sum(v >= 0.5 for v in ious) / len(ious):6.1%}  >= 0.7 {sum(v >= 0.7 for v in ious) / len(ious):6.1%}"
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--boxes", default=None)
    ap.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--seed", type=int, default=0)
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
    print(f"{len(photos)} photos; {source}; maps: {cfg.spec}")
    from annotation.proposals import cam_box

    centre = reference_maps(P.size)["centre"]
    rows = []
    for rec, img, boxes in photos:
        d = P.predict_one(img)
        cam = explain(P, img, [d.ranked[0].sub_class], [], cfg)[0].cam
        rows.append((img.size, boxes, cam, rec.label == d.ranked[0].sub_class))
    out = {}
    for level in a.levels:
        for name, pick in (("model", lambda r: r[2]), ("centre", lambda r: centre)):
            ious = []
            for size, boxes, cam, _ in rows:
                box = cam_box(pick((size, boxes, cam)), size[0], size[1], level)
                ious.append(max((iou(box, tuple(b)) for b in boxes), default=0.0) if box else 0.0)
            out[(level, name)] = ious
            print(f"level {level:.2f} {name:7s} IoU {summary(ious)}")
    right = [i for i, r in enumerate(rows) if r[3]]
    if right and 0.5 in a.levels:
        print(
            f"level 0.50 model, top-1 right ({len(right)} photos): IoU {summary([out[(0.5, 'model')][i] for i in right])}"
        )
    return out


if __name__ == "__main__":
    main()
