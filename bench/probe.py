"""Short timing/recipe probes: python bench/probe.py DATA NAME key=value ... (TrainConfig fields).

Example: python bench/probe.py /path/ham10000-train sgd optimizer=sgd lr0=0.00465 lrf=0.00215 weight_decay=0.000355
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.ml.train import TrainConfig, train

TAX = Path(__file__).resolve().parents[1] / "inference/ml/taxonomies/ham10000.json"


def main():
    data, name, *kv = sys.argv[1:]
    over = {}
    for s in kv:
        k, v = s.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    out = Path(os.environ.get("PROBE_DIR", Path(__file__).resolve().parents[1] / "models" / "probes")) / name
    cfg = TrainConfig(data=data, taxonomy=str(TAX), out=str(out), **over)
    last = {"t": 0}

    def prog(d):
        if d.get("event") == "epoch_end" or (time.time() - last["t"] > 30 and d.get("stage") != "cache"):
            last["t"] = time.time()
            print(name, d, flush=True)

    t = time.time()
    train(cfg, progress=prog)
    man = json.loads((out / "model.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    res = {
        "name": name,
        "overrides": over,
        "wall": time.time() - t,
        "timings": man["timings_seconds"],
        "train_ips": man["train_images_per_second"],
        "load": open("/proc/loadavg").read().split()[:3],
    }
    for k in ("flat", "hierarchical_hard", "hierarchical_product", "coarse"):
        res[k] = {x: round(m[k][x], 4) for x in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")}
    print("RESULT", json.dumps(res), flush=True)
    with open(Path(__file__).resolve().parent / "results" / "probes.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
