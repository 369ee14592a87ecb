"""Grad-CAM speed for one photo: top-3 sub-classes (fine model) [+ top meta-class (coarse)].

    python bench/gradcam_speed.py [MODEL_DIR] [--data DIR] [--n 20] [--threads 2]

MODEL_DIR: an inference.ml artefact (e.g. the ML engineer's full EfficientNet-Lite0 run under
models/ or bench/results/); without it a freshly initialised Lite0 artefact is built in /tmp
(timing does not depend on trained weights). Prints p50/p95 in ms for:
  - predict_one (the ranked differential, for reference)
  - Grad-CAM, 3 sub-class targets, portal path (trunk once + batched targets after it, frozen weights)
  - Grad-CAM, 3 sub + 1 meta target (what the portal stores per photo)
  - Grad-CAM, 3 targets, plain pytorch-grad-cam on a batched input (the baseline the fast path replaces)
  - overlay rendering of 4 maps to PNG
Target: < 300 ms for one photo and three targets on this 2-core CPU. /proc/loadavg is printed
because other processes share the CPU.
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _artefact import fresh_lite0_artefact, loadavg, pct, sample_images

from inference.ml import explain as E
from inference.ml.predict import Predictor


class Plain(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--data", default=None, help="data dir with images/ (default: generated photos)")
    ap.add_argument("--n", type=int, default=20, help="photos (each timed once after a warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = (
        Path(args.model) if args.model else fresh_lite0_artefact(Path(tempfile.gettempdir()) / "derm-bench-lite0-fresh")
    )
    P = Predictor.load(model_dir)
    imgs = sample_images(args.data, args.n)
    print(
        f"model {model_dir.name} backbone {P.manifest['backbone']} size {P.size} threads {args.threads} "
        f"photos {len(imgs)} load {loadavg()}"
    )
    layer = P.gradcam_layer_name
    res = {
        k: [] for k in ("predict_one", "gradcam_3_sub", "gradcam_3_sub_1_meta", "plain_gradcam_3_sub", "render_4_png")
    }
    # warm-up
    d = P.predict_one(imgs[0])
    E.explain(
        P, imgs[0], [r.sub_class for r in d.ranked[:3]], [max(d.meta_probabilities, key=d.meta_probabilities.get)]
    )
    for img in imgs:
        t = time.perf_counter()
        d = P.predict_one(img)
        res["predict_one"].append((time.perf_counter() - t) * 1000)
        subs = [r.sub_class for r in d.ranked[:3]]
        meta = [max(d.meta_probabilities, key=d.meta_probabilities.get)]
        t = time.perf_counter()
        E.explain(P, img, subs)
        res["gradcam_3_sub"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        maps = E.explain(P, img, subs, meta)
        res["gradcam_3_sub_1_meta"].append((time.perf_counter() - t) * 1000)
        x = P.preprocess(img)
        idx = [P.taxonomy.sub_classes.index(s) for s in subs]
        t = time.perf_counter()
        E._cams(Plain(P.fine_model), "m." + layer, x, idx)
        res["plain_gradcam_3_sub"].append((time.perf_counter() - t) * 1000)
        vmax = E.shared_scale(maps)
        t = time.perf_counter()
        for m in maps:
            E.render_overlay(m.cam, vmax, img.size).save(io.BytesIO(), "PNG", compress_level=3)
        res["render_4_png"].append((time.perf_counter() - t) * 1000)
    print(f"{'step':28s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for k, v in res.items():
        print(f"{k:28s} {pct(v, 50):8.1f} {pct(v, 95):8.1f}")
    print(f"load after {loadavg()}")


if __name__ == "__main__":
    main()
