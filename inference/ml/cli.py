"""Command line: ``python -m inference.ml train|evaluate|calibrate|predict|search``.

``predict --json [--modality dermoscopic|clinical] IMAGE...`` prints one object per image:
``{"image", **Differential.to_dict()}`` (``predict.py``), with ``triage`` {tier, reason, abstain,
thresholds, ...} and ``calibrated``. ``calibrate --model M --data DIR [--modality M]
[--urgent-sensitivity 0.9] [--malignant-sensitivity 0.95] [--high-grade-sensitivity 0.98] [--int8]`` writes the triage calibration
(``triage_fit.fit_triage``) and, with ``--int8`` or ``--images N``, the int8 calibration.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from .cli_args import BACKBONE_CHOICES, DEVICE_HELP, _positive, add_train_args, config_from_args


def _fmt_eta(s):
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ConsoleProgress:
    def __init__(self, every_s: float = 10.0, stream=None):
        # sys.stderr as it is now (a default bound at import would keep a stream that may be closed since)
        self.every, self.last, self.stream = every_s, 0.0, sys.stderr if stream is None else stream

    def __call__(self, d: dict):
        now = time.time()
        ev = d.get("event")
        st = d.get("stage")
        if ev == "epoch_end":
            print(
                f"[{st}] epoch {d['epoch']}/{d['epochs']} done: loss {d['loss']:.4f} ({d['seconds']:.0f} s)",
                file=self.stream,
                flush=True,
            )
        elif d.get("message"):
            print(f"[{st}] {d['message']}", file=self.stream, flush=True)
        elif ev:
            print(
                f"[{st}] {ev} " + " ".join(f"{k}={v}" for k, v in d.items() if k not in ("stage", "event")),
                file=self.stream,
                flush=True,
            )
        elif now - self.last >= self.every or (d.get("batch") == d.get("batches")):
            self.last = now
            if st == "cache":
                rate = d.get("images_per_second")
                more = f", {rate:.0f} photos/s, ETA {_fmt_eta(d.get('eta_seconds'))}" if rate else ""
                print(f"[cache] decoded {d['batch']}/{d['batches']} images{more}", file=self.stream, flush=True)
            else:
                print(
                    f"[{st}] epoch {d['epoch']}/{d['epochs']} batch {d['batch']}/{d['batches']} "
                    f"loss {d['loss']:.4f} lr {d.get('lr', 0):.2e} {d.get('images_per_second', 0):.1f} img/s "
                    f"ETA {_fmt_eta(d.get('eta_seconds'))}",
                    file=self.stream,
                    flush=True,
                )


def cmd_train(a):
    from .evaluate import format_report
    from .train import TrainingCancelled, train

    cfg = config_from_args(a)
    stop = {"flag": False}

    def on_sigterm(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        out = train(cfg, progress=ConsoleProgress(), should_stop=lambda: stop["flag"])
    except (TrainingCancelled, KeyboardInterrupt):
        print("interrupted: re-run the same command to resume from the last completed epoch", file=sys.stderr)
        return 130
    from . import distributed

    if not distributed.is_main():  # torchrun: rank 0 writes and reports the artefact
        return 0
    man = json.loads((Path(out) / "model.json").read_text())
    d = man["data"]
    if d["skipped_labels"]:
        print("skipped labels not in the taxonomy: " + ", ".join(f"{k}: {v}" for k, v in d["skipped_labels"].items()))
    if d["bad_images"]:
        print(
            f"unreadable images skipped ({len(d['bad_images'])}): "
            + ", ".join(f"{n} ({e})" for n, e in d["bad_images"])
        )
    m = json.loads((Path(out) / "metrics.json").read_text())
    if m:
        print(format_report(m))
    print(f"model written to {out}")
    return 0


def cmd_evaluate(a):
    from .evaluate import evaluate, format_report

    rep = evaluate(
        a.model,
        a.data,
        positive=_positive(a.positive),
        precision=a.precision,
        views=a.views,
        members=a.members,
        device=a.device,
    )
    print(format_report(rep))
    if a.json:
        from .artefact import write_json

        write_json(a.json, rep)
        print(f"JSON written to {a.json}")
    return 0


def cmd_calibrate(a):
    from . import triage as tri
    from .triage_fit import fit_triage

    if not a.no_triage:
        cfg = fit_triage(
            a.model,
            a.data,
            modality=a.modality,
            progress=ConsoleProgress(),
            targets={
                "urgent": a.urgent_sensitivity,
                "malignant": a.malignant_sensitivity,
                "high_grade": a.high_grade_sensitivity,
            },
        )
        c, h = cfg["calibration"], cfg["heldout"]
        print(
            f"triage calibration of {a.model} on {cfg['source']['heldout_photos']} held-out photos "
            f"({cfg['modality']}): temperature {cfg['temperature']:.3f}, ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}"
        )
        for k in (k for k in tri.TARGET_KEYS if k in h):
            b = h[k]
            print(
                f"  {k:10s} threshold {_num(b['threshold'])}  target sensitivity {b['target_sensitivity']:.2f}: "
                f"sensitivity {_num(b['sensitivity'])} specificity {_num(b['specificity'])} "
                f"({b['n_pos']} positive, {b['n_neg']} negative photos)"
            )
        print(
            f"  unfamiliar-photo detector: {cfg['ood']['method']}, threshold {cfg['ood']['threshold']:.3f}, "
            f"flags {cfg['ood']['heldout_false_alarm']:.1%} of held-out photos"
        )
    if a.int8 or a.images is not None:
        from .calibrate import calibrate_artefact

        entry = calibrate_artefact(a.model, a.data, a.images or 256, a.seed)
        print(
            f"int8 calibration from {entry['images']} photos ({entry['source']}) written to "
            f"{Path(a.model) / entry['file']}; serve it with --precision int8 or DERM_ML_PRECISION=int8"
        )
    return 0


def _num(x):
    return "  -  " if x is None else f"{x:.3f}"


def cmd_predict(a):
    from PIL import Image

    from .predict import Predictor

    P = Predictor.load(a.model, device=a.device)
    meta = {k: v for k, v in (("age", a.age), ("sex", a.sex), ("site", a.site)) if v is not None} or None
    if meta and P.metadata_fine is None:
        print(
            f"{a.model}: this model was trained without patient metadata; --age/--sex/--site are ignored",
            file=sys.stderr,
        )
    rc = 0
    results = []
    for path in a.images:
        try:
            with Image.open(path) as im:
                im.load()
                d = P.predict_one(im, method=a.method, metadata=meta, modality=a.modality)
        except Exception as e:
            print(f"{path}: cannot read image ({type(e).__name__}: {e})", file=sys.stderr)
            rc = 1
            continue
        results.append({"image": path, **d.to_dict()})
        if a.json:
            continue
        print(f"{path}  (fusion: {d.fused_method})")
        for i, it in enumerate(d.ranked[: a.top], 1):
            print(f"  {i}. {it.probability:6.1%}  {P.taxonomy.display_name(it.sub_class)}  [{it.meta_class}]")
        print(
            "  meta-classes: "
            + ", ".join(f"{k} {v:.1%}" for k, v in sorted(d.meta_probabilities.items(), key=lambda kv: -kv[1]))
        )
        if d.malignancy_score is not None:
            from .taxonomy import GRADE_ADVICE, GRADE_NAMES

            print(
                f"  malignancy score {d.malignancy_score:.2f} -> grade {d.malignancy_grade} "
                f"({GRADE_NAMES[d.malignancy_grade]}: {GRADE_ADVICE[d.malignancy_grade]})"
            )
        if d.extra.get("metadata_used"):
            print("  with patient metadata: " + ", ".join(f"{k} {v}" for k, v in d.extra["metadata_used"].items()))
        t = d.triage
        print(
            f"  triage: {t['tier'] or 'no advice'} ({t['reason']})"
            + ("" if d.calibrated else "; probabilities not calibrated")
        )
        print(
            f"  top-1 {d.max_probability:.1%}, margin {d.margin:.1%}, OOD score {d.ood_score:.3f}"
            + ("  ** looks unfamiliar: unlike the training images **" if d.looks_unfamiliar else "")
        )
    if a.json:
        print(json.dumps(results, indent=2))
    return rc


def cmd_search(a):
    from .search import SearchBudget, run_search
    from .train import TrainConfig

    base = TrainConfig(
        data=a.data,
        taxonomy=a.taxonomy,
        out=a.out,
        backbone=a.backbone,
        image_size=a.image_size,
        max_train_images=a.max_train_images,
        seed=a.seed,
    )
    budget = SearchBudget(
        generations=a.generations, population=a.population, epochs=a.epochs, max_minutes=a.max_minutes, folds=a.folds
    )
    best = run_search(base, budget, progress=ConsoleProgress())
    print(json.dumps(best, indent=2))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m inference.ml", description="Derm Portal ML engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train fine + coarse models (resumable)")
    add_train_args(t)
    e = sub.add_parser("evaluate", help="evaluate a model artefact")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", default=None)
    e.add_argument("--positive", default=None)
    e.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16", "int8"],
        help="default auto: float32 through ONNX Runtime (as the portal serves)",
    )
    e.add_argument(
        "--views",
        type=int,
        default=None,
        choices=[1, 2, 4],
        help="test-time views per photo (default: the artefact's, 2 = photo + mirror)",
    )
    e.add_argument(
        "--members", type=int, default=None, help="use only the first N fine models of an ensemble (default: all)"
    )
    e.add_argument("--device", default=None, help=DEVICE_HELP)
    c = sub.add_parser(
        "calibrate",
        help="triage calibration (temperature, tier thresholds, unfamiliar-photo "
        "detector) from the held-out split; --int8 adds int8 serving",
    )
    c.add_argument("--model", required=True)
    c.add_argument(
        "--data",
        required=True,
        help="the model's training data (its held-out split calibrates triage; "
        "int8 uses its training split, or any photos)",
    )
    c.add_argument(
        "--modality",
        default=None,
        help="modality of the training photos (default: a modality column of the data, else dermoscopic)",
    )
    c.add_argument(
        "--urgent-sensitivity",
        type=float,
        default=None,
        help="target share of high-grade malignant (grade 3) held-out photos given urgent (default 0.90)",
    )
    c.add_argument(
        "--malignant-sensitivity",
        type=float,
        default=None,
        help="target share of malignant (grade >= 2) held-out photos given refer or urgent (default 0.95)",
    )
    c.add_argument(
        "--high-grade-sensitivity",
        type=float,
        default=None,
        help="target share of high-grade (grade 3) held-out photos given refer or urgent, i.e. kept out of "
        "routine (default 0.98)",
    )
    c.add_argument("--no-triage", action="store_true", help="skip the triage calibration (with --int8)")
    c.add_argument("--int8", action="store_true", help="also add int8 serving (activation ranges)")
    c.add_argument(
        "--images", type=int, default=None, help="int8: training photos observed (default 256; implies --int8)"
    )
    c.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("predict", help="ranked differential for images")
    p.add_argument("--model", required=True)
    p.add_argument("--method", default="product", choices=["product", "hard", "flat"])
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--age", default=None, help="patient's age in years (all images), if the model has metadata")
    p.add_argument("--sex", default=None, help="male / female")
    p.add_argument("--site", default=None, help='body site as in the training data, e.g. "lower extremity"')
    p.add_argument(
        "--modality",
        default=None,
        help="dermoscopic or clinical (all images): a photo of another modality than the model's gets no triage tier",
    )
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("images", nargs="+")
    s = sub.add_parser("search", help="evolutionary hyperparameter search (METHODS.md section 5)")
    s.add_argument("--data", required=True)
    s.add_argument("--taxonomy", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONE_CHOICES)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--generations", type=int, default=3)
    s.add_argument("--population", type=int, default=5)
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--folds", type=int, default=2)
    s.add_argument("--max-minutes", type=float, default=30.0)
    s.add_argument("--max-train-images", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    return {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "predict": cmd_predict,
        "search": cmd_search,
        "calibrate": cmd_calibrate,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
