"""Full pipeline benchmark: fine + transfer + coarse training with the DEFAULT recipe, evaluation on
a case-grouped stratified 20% hold-out, optional single-stage binary baseline.

    python bench/run_pipeline.py DATA_DIR --out MODEL_DIR [--positive mel] [--binary-epochs N]
           [--results bench/results/pipeline.json] [key=value TrainConfig overrides ...]

Prints wall time per stage, training images/s, and all metrics; samples /proc/loadavg every
30 s (other processes share the CPU) and stores everything in the results JSON. Re-running the
same command resumes an interrupted run.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.cli import ConsoleProgress
from inference.ml.evaluate import format_report
from inference.ml.train import TrainConfig, train

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--taxonomy", default=str(HERE.parent / "inference/ml/taxonomies/ham10000.json"))
    ap.add_argument("--positive", default="mel")
    ap.add_argument("--binary-epochs", type=int, default=0)
    ap.add_argument("--results", default=str(HERE / "results" / "pipeline.json"))
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_intermixed_args()
    over = {}
    for s in a.overrides:
        k, v = s.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    cfg = TrainConfig(
        data=a.data,
        taxonomy=a.taxonomy,
        out=a.out,
        positive=[p for p in a.positive.split(",") if p] or None,
        binary_epochs=a.binary_epochs,
        **over,
    )
    samples = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append((time.strftime("%H:%M:%S"), open("/proc/loadavg").read().split()[:3]))
            stop.wait(30)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    stage_t = {}
    con = ConsoleProgress(every_s=30, stream=sys.stdout)

    def prog(d):
        st = d.get("stage")
        if st and st not in stage_t:
            stage_t[st] = time.time()
        con(d)

    t0 = time.time()
    out = train(cfg, progress=prog)
    wall = time.time() - t0
    stop.set()
    man = json.loads((Path(out) / "model.json").read_text())
    m = json.loads((Path(out) / "metrics.json").read_text())
    print(format_report(m))
    tm = man["timings_seconds"]
    res = {
        "command": " ".join(sys.argv),
        "wall_seconds_this_invocation": wall,
        "timings_seconds": tm,
        "training_minutes_fine_transfer_coarse": (tm["fine"] + tm["coarse"]) / 60,
        # with --fine-from: the reused fine model(s) count towards the recipe's training time
        "training_minutes_including_reused_fine": (tm["fine"] + tm.get("fine_reused_seconds", 0.0) + tm["coarse"]) / 60,
        "train_images_per_second": man["train_images_per_second"],
        "eval_inference_images_per_second_fine_plus_coarse_tta": m.get("inference_images_per_second_fine_plus_coarse"),
        "loadavg_samples": samples,
        "settings": man["training"],
        "data": {k: v for k, v in man["data"].items() if k != "bad_images"},
        "n_test": man["data"]["n_test"],
        "metrics": m,
        "model_dir": str(Path(out).resolve()),
    }
    for k in ("flat", "hierarchical_hard", "hierarchical_product", "coarse"):
        r = m[k]
        print(
            f"{k:22s} acc {r['accuracy']:.4f} balacc {r['balanced_accuracy']:.4f} macroF1 {r['macro_f1']:.4f} "
            f"top3 {r['top3_accuracy']:.4f} macroAUC {r['macro_auc']:.4f}"
        )
    print(
        "timings (s):",
        json.dumps({k: [round(x, 1) for x in v] if isinstance(v, list) else round(v, 1) for k, v in tm.items()}),
    )
    print("train images/s:", man["train_images_per_second"])
    print("loadavg samples:", samples[:3], "...", samples[-3:])
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps(res, indent=2))
    print("results written to", a.results)


if __name__ == "__main__":
    main()
