"""Grad-CAM placement: how much of each overlay's heat sits on the lesion, per way of making the maps.

    python bench/gradcam_placement.py MODEL DATA [--n 150] [--variants SPEC ...] [--boxes VOC_DIR|CSV]
        [--threads 1] [--seed 0] [--boot 2000] [--results bench/results] [--montage]

MODEL: an inference.ml artefact; DATA: a dataset directory (HAM10000 style or generic). The photos
are the artefact's held-out cases when DATA is its training data (``evaluate.artefact_records``),
else every photo of DATA; --n of them (drawn with --seed) that have a lesion box.

Lesion boxes: real annotator boxes from --boxes (a Pascal VOC folder or a CSV image,x0,y0,x1,y1),
else made in code (``_lesion_boxes.lesion_box``: Otsu split of a skin-distance map, the central
component's bounding box; photos where that fails are dropped). The derived boxes are written to
RESULTS/gradcam_boxes_<model>.csv (--montage: also a PNG of the first 48 boxes to look at).

Per photo the differential fixes the targets (top-3 sub-classes of the fine model + the top
meta-class of the coarse model, as the portal stores), then every variant (``CamSettings.parse``
notation, e.g. ``layercam@head+block:-6,flip,smooth=0.03``; the first one is the reference) makes
its 4 maps. Per map: the share of its heat inside the box (``explain.heatmap_mass_in_boxes``) and
the pointing game (``explain.peak_in_boxes``: hottest cell inside the box; tied peaks count by the
share inside); an empty map counts as 0 and a miss. Printed per variant: mean and 95 % bootstrap CI over photos (all 4 maps; the top
sub-class map; the meta map), the paired difference to the reference (same photos, same
resamples), and the serving time per photo of a differential with its overlays (predict_one +
maps + 4 PNG overlays, --threads torch threads as the portal's worker): wall-clock p50/p95 ms and
the process CPU time p50 (with one thread, what an idle core would take: other processes share
this CPU, so the wall clock swings with the load). Two reference
rows need no model: "uniform" (heat spread evenly: the box's share of the square) and "centre" (a
centred Gaussian, sigma a quarter of the side): what a map knowing nothing but "lesions are
central" scores. Per-photo rows and the summary go to RESULTS/gradcam_placement_<model>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_VARIANTS = [
    "gradcam@head",
    "gradcam++@head",
    "layercam@head",
    "hirescam@head",
    "gradcam@block:-6",
    "layercam@block:-6",
    "hirescam@block:-6",
    "gradcam@head+block:-6",
    "layercam@head+block:-6",
    "gradcam@head,smooth=0.05",
    "gradcam@head,flip",
]
METRICS = ("mass", "hit", "mass_sub1", "hit_sub1", "mass_meta", "hit_meta")
SERVING_LIMIT_MS = 1000.0


def bootstrap_ci(values, boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the mean over photos, percentile bootstrap."""
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), (boot, len(v)))
    means = v[idx].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_ci(a, b, boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean difference b - a over the same photos with its paired 95 % bootstrap CI."""
    return bootstrap_ci(np.asarray(b, np.float64) - np.asarray(a, np.float64), boot, seed)


def map_scores(cams, boxes, photo_size) -> dict:
    """Placement of one photo's maps (the first is the top sub-class, the last the meta map):
    mean mass / hit over all maps and per map kind; an empty map scores 0 and a miss."""
    from inference.ml.explain import heatmap_mass_in_boxes, peak_in_boxes

    mass = [heatmap_mass_in_boxes(c, boxes, photo_size) or 0.0 for c in cams]
    hit = [peak_in_boxes(c, boxes, photo_size) or 0.0 for c in cams]
    return {
        "mass": float(np.mean(mass)),
        "hit": float(np.mean(hit)),
        "mass_sub1": mass[0],
        "hit_sub1": hit[0],
        "mass_meta": mass[-1],
        "hit_meta": hit[-1],
        "empty": int(sum(float(np.max(c)) <= 0 for c in cams)),
    }


def reference_maps(side: int) -> dict:
    yy, xx = np.mgrid[:side, :side] + 0.5
    s = side / 4
    return {
        "uniform": np.ones((side, side), np.float32),
        "centre": np.exp(-((xx - side / 2) ** 2 + (yy - side / 2) ** 2) / (2 * s * s)).astype(np.float32),
    }


def select_photos(P, data, n: int, seed: int, boxes_path, results: Path, model_name: str, montage: bool):
    """[(record, PIL image, boxes)] for up to n photos with a box, and the box source in words."""
    from _lesion_boxes import lesion_box, read_boxes, write_boxes_csv
    from PIL import Image

    from inference.ml.evaluate import artefact_records

    records, scope, _ = artefact_records(P, data, "test")
    order = np.random.default_rng(seed).permutation(len(records))
    given = read_boxes(boxes_path) if boxes_path else None
    chosen, rows = [], []
    for i in order:
        if len(chosen) >= n:
            break
        rec = records[i]
        img = Image.open(rec.path).convert("RGB")
        name = Path(rec.path).name
        if given is not None:
            bx = given.get(name) or given.get(Path(rec.image).name)
            if bx:
                chosen.append((rec, img, bx))
            continue
        box, status = lesion_box(img)
        rows.append(
            {
                "image": rec.image,
                "width": img.size[0],
                "height": img.size[1],
                **dict(zip(("x0", "y0", "x1", "y1"), [round(v, 1) for v in box] if box else [""] * 4)),
                "status": status,
            }
        )
        if box:
            chosen.append((rec, img, [box]))
    if given is not None:
        return chosen, f"annotator boxes from {boxes_path} ({scope})"
    out = results / f"gradcam_boxes_{model_name}.csv"
    write_boxes_csv(out, rows)
    failed = sum(r["status"] != "ok" for r in rows)
    if montage:
        _montage(chosen[:48], results / f"gradcam_boxes_{model_name}.png")
    return chosen, (
        f"boxes made in code for {len(rows)} photos of the {scope}, {failed} dropped "
        f"(no clear lesion); written to {out}"
    )


def _montage(items, path: Path, tile: int = 160):
    from PIL import Image, ImageDraw

    cols = 8
    m = Image.new("RGB", (cols * tile, max(1, -(-len(items) // cols)) * tile), "white")
    for k, (_, img, boxes) in enumerate(items):
        im = img.copy()
        d = ImageDraw.Draw(im)
        for b in boxes:
            d.rectangle(b, outline=(0, 255, 0), width=max(1, im.size[0] // 80))
        m.paste(im.resize((tile - 4, tile - 4)), ((k % cols) * tile, (k // cols) * tile))
    m.save(path)


def serve_overlays(maps, photo_size) -> None:
    """What the portal does with the maps after computing them (``inference.services``)."""
    from inference.ml.explain import downsample, render_overlay, shared_scale

    vmax = shared_scale(maps)
    for m in maps:
        render_overlay(m.cam, vmax, photo_size).save(io.BytesIO(), "PNG", optimize=False, compress_level=3)
        downsample(m.cam / vmax)


def run(
    model,
    data,
    n=150,
    variants=DEFAULT_VARIANTS,
    boxes=None,
    threads=1,
    seed=0,
    boot=2000,
    results=ROOT / "bench" / "results",
    montage=False,
    log=print,
) -> dict:
    import torch
    from _artefact import loadavg

    from inference.ml.explain import CamSettings, explain, layer_names
    from inference.ml.predict import Predictor

    torch.set_num_threads(threads)
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    P = Predictor.load(model)
    name = Path(model).resolve().name
    settings = {}
    for spec in variants:
        cfg = CamSettings.parse(spec)
        try:  # a layer the backbone lacks (e.g. block:-6 of a 4-block test network)
            layer_names(P.fine_model, cfg.layers)
        except ValueError as e:
            log(f"skipping {spec}: {e}")
            continue
        settings[cfg.spec] = cfg
    if not settings:
        raise SystemExit("no variant runs on this model")
    photos, box_source = select_photos(P, data, n, seed, boxes, results, name, montage)
    if not photos:
        raise SystemExit(f"{data}: no photo with a lesion box")
    log(f"model {name} ({P.manifest['backbone']}, {P.size} px), {len(photos)} photos; {box_source}")
    log(f"torch threads {threads}; load {loadavg()}")
    refs = reference_maps(P.size)
    per_photo = []
    # warm-up: the first call pays for lazy initialisation
    d0 = P.predict_one(photos[0][1])
    for cfg in settings.values():
        explain(
            P,
            photos[0][1],
            [r.sub_class for r in d0.ranked[:3]],
            [max(d0.meta_probabilities, key=d0.meta_probabilities.get)],
            cfg,
        )
    for k, (rec, img, bx) in enumerate(photos):
        t, c = time.perf_counter(), time.process_time()
        d = P.predict_one(img)
        t_pred, c_pred = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
        subs = [r.sub_class for r in d.ranked[:3]]
        meta = [max(d.meta_probabilities, key=d.meta_probabilities.get)]
        row = {
            "image": rec.image,
            "label": rec.label,
            "boxes": [list(map(float, b)) for b in bx],
            "targets": subs + meta,
            "predict_ms": t_pred,
            "variants": {},
        }
        for ref, cam in refs.items():
            row["variants"][ref] = map_scores([cam], bx, img.size)
        for spec, cfg in settings.items():
            t, c = time.perf_counter(), time.process_time()
            maps = explain(P, img, subs, meta, cfg)
            serve_overlays(maps, img.size)
            t_cam = (time.perf_counter() - t) * 1000
            row["variants"][spec] = {
                **map_scores([m.cam for m in maps], bx, img.size),
                "cam_ms": t_cam,
                "serve_ms": t_pred + t_cam,
                "serve_cpu_ms": c_pred + (time.process_time() - c) * 1000,
            }
        per_photo.append(row)
        if (k + 1) % 25 == 0:
            log(f"  {k + 1}/{len(photos)} photos; load {loadavg()}")
    summary = summarise(per_photo, list(refs) + list(settings), next(iter(settings)), boot, seed)
    out = {
        "model": name,
        "data": str(data),
        "box_source": box_source,
        "n": len(per_photo),
        "threads": threads,
        "seed": seed,
        "boot": boot,
        "reference": next(iter(settings)),
        "summary": summary,
        "photos": per_photo,
    }
    path = results / f"gradcam_placement_{name}.json"
    path.write_text(json.dumps(out, indent=1))
    print_table(out, log)
    log(f"load after {loadavg()}; per-photo rows: {path}")
    return out


def summarise(per_photo, names, reference, boot, seed) -> dict:
    out = {}
    for v in names:
        s = {}
        for m in METRICS:
            vals = [r["variants"][v][m] for r in per_photo]
            s[m] = bootstrap_ci(vals, boot, seed)
            if v != reference and m in ("mass", "hit"):
                s["d_" + m] = paired_ci([r["variants"][reference][m] for r in per_photo], vals, boot, seed)
        s["meta_minus_sub1_mass"] = paired_ci(
            [r["variants"][v]["mass_sub1"] for r in per_photo],
            [r["variants"][v]["mass_meta"] for r in per_photo],
            boot,
            seed,
        )
        s["empty_maps"] = int(sum(r["variants"][v]["empty"] for r in per_photo))
        if "serve_ms" in per_photo[0]["variants"][v]:
            ms = [r["variants"][v]["serve_ms"] for r in per_photo]
            cam = [r["variants"][v]["cam_ms"] for r in per_photo]
            s["serve_ms"] = (float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))
            s["serve_cpu_ms"] = float(np.percentile([r["variants"][v]["serve_cpu_ms"] for r in per_photo], 50))
            s["cam_ms"] = (float(np.percentile(cam, 50)), float(np.percentile(cam, 95)))
            d_mass, d_hit = s.get("d_mass"), s.get("d_hit")
            s["clears"] = bool(d_mass and d_mass[1] > 0 and d_hit[2] > 0 and s["serve_cpu_ms"] < SERVING_LIMIT_MS)
        out[v] = s
    return out


def print_table(res, log=print) -> None:
    def f(t):
        return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"

    def fd(t):
        return f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"

    log(
        f"\n{res['n']} photos; reference {res['reference']}; mean [95 % bootstrap CI]; d = variant - reference (paired)"
    )
    log(
        f"{'variant':34s} {'heat in box (4 maps)':>22s} {'pointing hit (4 maps)':>22s} {'d heat in box':>25s} "
        f"{'d pointing hit':>25s} {'top sub mass':>8s} {'meta mass':>9s} {'empty':>5s} {'serve p50/p95 ms':>16s} {'CPU p50':>7s} {'maps p50':>8s}"
    )
    for v, s in res["summary"].items():
        serve = f"{s['serve_ms'][0]:.0f}/{s['serve_ms'][1]:.0f}" if "serve_ms" in s else "-"
        cam = f"{s['cam_ms'][0]:.0f}" if "cam_ms" in s else "-"
        cpu = f"{s['serve_cpu_ms']:.0f}" if "serve_cpu_ms" in s else "-"
        log(
            f"{v:34s} {f(s['mass']):>22s} {f(s['hit']):>22s} {fd(s['d_mass']) if 'd_mass' in s else '':>25s} "
            f"{fd(s['d_hit']) if 'd_hit' in s else '':>25s} {s['mass_sub1'][0]:8.3f} {s['mass_meta'][0]:9.3f} "
            f"{s['empty_maps']:5d} {serve:>16s} {cpu:>7s} {cam:>8s}" + ("  clears" if s.get("clears") else "")
        )
    ref = res["summary"][res["reference"]]
    log(
        f"meta (coarse model) minus top sub-class (fine model) heat in box, {res['reference']}: "
        f"{fd(ref['meta_minus_sub1_mass'])}"
    )
    log("clears: heat-in-box difference CI above 0, pointing difference CI not below 0, serving CPU time p50 < 1 s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=150, help="photos with a box (default 150)")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help="CamSettings specs, METHOD@LAYER[+LAYER][,flip][,smooth=F]; the first is the reference",
    )
    ap.add_argument("--boxes", default=None, help="annotator boxes: Pascal VOC folder or CSV image,x0,y0,x1,y1")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the portal's worker default: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--montage", action="store_true", help="also draw the first 48 boxes into a PNG")
    a = ap.parse_args(argv)
    for p, what in ((a.model, "model"), (a.data, "data")):
        if not Path(p).is_dir():
            raise SystemExit(f"{p}: {what} directory not found")
    run(a.model, a.data, a.n, a.variants, a.boxes, a.threads, a.seed, a.boot, a.results, a.montage)


if __name__ == "__main__":
    main()
