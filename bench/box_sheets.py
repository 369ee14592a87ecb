"""Contact sheets for drawing reference lesion boxes by eye: held-out photos of an artefact, four to
a sheet at twice their size, with a pixel grid (a line every 16 px, labels every 32 px), so a
reader can write each lesion's x0 y0 x1 y1 into a CSV that bench/gradcam_placement.py and
bench/proposal_iou.py read with --boxes (columns image,width,height,x0,y0,x1,y1,status; rows whose
status is not "ok" are skipped).

    python bench/box_sheets.py MODEL DATA --n 48 --out DIR [--seed 0]

The photos are drawn as bench/gradcam_placement.py draws them (same --seed), so a CSV for the first
N sheets covers the photos those benches take first. DIR gets sheetNN.png, boxes-template.csv (one
row per photo, coordinates empty) and list.txt. Keep the photos and the boxes drawn on them out of
the repository when the data's licence says so.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALE, GAP = 2, 40


def sheet(photos: list[tuple[str, Image.Image]], first: int) -> Image.Image:
    side = max(max(im.size) for _, im in photos) * SCALE
    out = Image.new("RGB", (2 * (side + GAP), 2 * (side + GAP)), "white")
    d = ImageDraw.Draw(out)
    for j, (name, im) in enumerate(photos):
        w, h = im.size
        ox, oy = 30 + (j % 2) * (side + GAP), 30 + (j // 2) * (side + GAP)
        out.paste(im.resize((w * SCALE, h * SCALE)), (ox, oy))
        for v in range(0, max(w, h) + 1, 16):
            col = (0, 255, 0) if v % 64 == 0 else (255, 255, 255)
            if v <= w:
                d.line([(ox + v * SCALE, oy), (ox + v * SCALE, oy + h * SCALE)], fill=col)
                if v % 32 == 0:
                    d.text((ox + v * SCALE - 6, oy - 12), str(v), fill="black")
            if v <= h:
                d.line([(ox, oy + v * SCALE), (ox + w * SCALE, oy + v * SCALE)], fill=col)
                if v % 32 == 0:
                    d.text((ox - 26, oy + v * SCALE - 5), str(v), fill="black")
        d.text((ox + 5, oy + h * SCALE + 3), f"{first + j}: {name}", fill="black")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from inference.ml.evaluate import artefact_records
    from inference.ml.predict import Predictor

    records, scope, _ = artefact_records(Predictor.load(a.model), a.data, "test")
    order = np.random.default_rng(a.seed).permutation(len(records))[: a.n]
    photos = [(Path(records[i].path).name, Image.open(records[i].path).convert("RGB")) for i in order]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(photos), 4):
        sheet(photos[k : k + 4], k).save(out / f"sheet{k // 4:02d}.png")
    (out / "list.txt").write_text("".join(f"{name}\n" for name, _ in photos))
    with open(out / "boxes-template.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "width", "height", "x0", "y0", "x1", "y1", "status"])
        w.writerows([name, *im.size, "", "", "", "", "ok"] for name, im in photos)
    print(f"{len(photos)} photos ({scope}) on {(len(photos) + 3) // 4} sheets in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
