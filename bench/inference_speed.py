"""Inference speed of a trained artefact: batched photos/s and single-photo ranked differential latency.

    python bench/inference_speed.py MODEL_DIR DATA_DIR [--n 256] [--batch 8] [--threads 2] [--precision auto|fp32|bf16|int8]
           [--members N] [--views 1|2|4] [--runtime auto|onnxruntime|torch] [--no-share-trunk]

Measures the full ``Predictor`` path (decode + resize + fine and coarse forward passes with flip
TTA + fusion + OOD score), plus the raw forward throughput on pre-decoded tensors, with and without
flip TTA. Prints /proc/loadavg since other processes share the CPU.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.predict import Predictor


def load():
    return open("/proc/loadavg").read().split()[:3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "int8"])
    ap.add_argument("--members", type=int, default=None, help="fine models of an ensemble to use (default: all)")
    ap.add_argument(
        "--views", type=int, default=None, choices=[1, 2, 4], help="test-time views (default: the artefact's)"
    )
    ap.add_argument(
        "--runtime",
        default=None,
        choices=["auto", "onnxruntime", "torch"],
        help="float32 through ONNX Runtime or PyTorch (default: DERM_ML_RUNTIME, else auto = onnxruntime)",
    )
    ap.add_argument(
        "--no-share-trunk",
        action="store_true",
        help="run the fine and coarse models apart even where they share their first blocks",
    )
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = time.time()
    P = Predictor.load(
        a.model, precision=a.precision, members=a.members, runtime=a.runtime, share_trunk=not a.no_share_trunk
    )
    if a.views is not None:
        P.tta, P.tta_views = a.views > 1, a.views
    load_s = time.time() - t
    paths = sorted((Path(a.data) / "images").glob("*.jpg"))[: a.n]
    pil = []
    for p in paths:
        with Image.open(p) as im:
            pil.append(im.convert("RGB"))
    res = {
        "model": str(a.model),
        "precision": P.precision,
        "runtime": P.runtime,
        "shared_depth": P.shared_depth,
        "image_size": P.size,
        "tta": P.tta,
        "threads": a.threads,
        "n": len(pil),
        "load_seconds": load_s,
        "loadavg_before": load(),
    }
    P.predict(pil[: a.batch])  # warm-up
    # batched, full path from PIL images
    t = time.time()
    P.predict(pil, batch_size=a.batch)
    dt = time.time() - t
    res["batched_photos_per_second"] = len(pil) / dt
    # batch size / thread sweep of the full path
    sweep = {}
    for th in sorted({1, a.threads}):
        torch.set_num_threads(th)
        for bsz in (1, 4, 8, 16, 32):
            P.predict(pil[:bsz], batch_size=bsz)
            t = time.time()
            P.predict(pil[:128], batch_size=bsz)
            sweep[f"threads{th}_batch{bsz}"] = 128 / (time.time() - t)
    torch.set_num_threads(a.threads)
    res["batched_photos_per_second_sweep"] = sweep
    best = max(sweep, key=sweep.get)
    res["best_setting"] = best
    res["best_photos_per_second"] = sweep[best]
    # single photo latency
    lat = []
    for im in pil[:40]:
        t = time.time()
        P.predict_one(im)
        lat.append((time.time() - t) * 1000)
    res["single_photo_ms_median"] = statistics.median(lat)
    res["single_photo_ms_p90"] = sorted(lat)[int(0.9 * len(lat)) - 1]
    # raw forward throughput on decoded tensors, with and without TTA
    u8 = torch.stack([P.to_uint8(im) for im in pil])
    for tta in (True, False):
        P.tta = tta
        t = time.time()
        for s in range(0, len(u8), a.batch):
            P.probabilities(u8[s : s + a.batch])
        res[f"forward_photos_per_second_tta_{tta}"] = len(u8) / (time.time() - t)
        lat = []
        for i in range(20):
            t = time.time()
            P.probabilities(u8[i : i + 1])
            lat.append((time.time() - t) * 1000)
        res[f"forward_single_ms_tta_{tta}"] = statistics.median(lat)
    res["loadavg_after"] = load()
    for k, v in res.items():
        if isinstance(v, dict):
            v = {kk: round(vv, 1) for kk, vv in v.items()}
        print(f"{k:40s} {v:.1f}" if isinstance(v, float) else f"{k:40s} {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
