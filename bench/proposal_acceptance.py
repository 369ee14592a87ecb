"""Benchmark: how good is the model's proposed first box (annotation/proposals.py)?

    .venv/bin/python bench/proposal_acceptance.py [--statuses accepted annotated] [--level 0.5]

Reads the portal's own database (DATABASE_URL or var/): for every submitted annotation of a
photo that has a finished prediction of the active model with a stored Grad-CAM map, it
rebuilds the proposal the editor offered and compares it with the annotator's final boxes.
Prints: photos with a proposal, how often the proposal was accepted unchanged (a box whose
origin is still 'proposed'), and the IoU of the proposal with the best-matching final box
(mean, median, share >= 0.5). With --level, the IoU of the map's own box cut at that level instead
of the photo outline the editor offers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--statuses", nargs="+", default=["accepted", "annotated"])
    ap.add_argument("--level", type=float, default=None, help="the map's box at this share of the peak instead")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.base")
    import django

    django.setup()
    from django.db import OperationalError

    from annotation.agreement import iou
    from annotation.models import PhotoAnnotation
    from annotation.proposals import photo_box
    from inference.ml.proposal import map_box
    from inference.models import Prediction

    try:
        Prediction.objects.exists()
    except OperationalError as exc:
        sys.exit(f"the portal database is not ready ({exc}); run manage.py migrate and annotate first")
    preds = {
        p.photo_id: p
        for p in Prediction.objects.filter(status="done", model_version__status="active")
        .prefetch_related("overlays")
        .order_by("photo_id", "created_at")
    }
    offered = accepted = 0
    ious: list[float] = []
    anns = PhotoAnnotation.objects.filter(status__in=args.statuses, photo_id__in=list(preds), is_gold=False)
    for ann in anns.select_related("photo").prefetch_related("boxes"):
        pred, photo = preds[ann.photo_id], ann.photo
        top = (pred.ranked or [{}])[0].get("sub_class")
        ov = next((o for o in pred.overlays.all() if o.target_kind == "sub" and o.target == top and o.heatmap), None)
        if ov is None:
            continue
        box = (
            photo_box(photo, ov.heatmap)[0]
            if args.level is None
            else map_box(ov.heatmap, photo.width, photo.height, args.level)
        )
        if box is None:
            continue
        offered += 1
        final = list(ann.boxes.all())
        accepted += any(b.origin == "proposed" for b in final)
        ious.append(max((iou(box, (b.x0, b.y0, b.x1, b.y1)) for b in final), default=0.0))
    what = "as offered" if args.level is None else f"the map's box at {args.level:.2f} of its peak"
    print(f"proposals {what}: {offered} annotation(s) of photos with a proposal")
    if not offered:
        print("no data: annotate photos that have an active model's prediction first")
        return
    print(f"accepted unchanged: {accepted} ({accepted / offered:.1%})")
    print(
        f"IoU with the best final box: mean {statistics.mean(ious):.3f}, median {statistics.median(ious):.3f}, "
        f">= 0.5: {sum(v >= 0.5 for v in ious) / len(ious):.1%}"
    )


if __name__ == "__main__":
    main()
