"""Triage on the held-out cases: tier sensitivity / specificity, calibration, unfamiliar-photo detection.

    python bench/triage.py MODEL DATA [--repeats 5] [--limit 300] [--json OUT]

MODEL must have a triage calibration (``python -m inference.ml calibrate --model MODEL --data DATA``);
DATA is its training data (the held-out split's photos are shifted for the detector's measurement).

Prints
1. in-sample: the stored temperature and thresholds measured on the held-out photos they were fitted
   on (optimistic by construction: the thresholds reach their targets there);
2. 2-fold cross-fitted over held-out CASES, ``--repeats`` random halvings: temperature, tier
   thresholds and the detector's standardisation + threshold fitted on one half of the cases and
   measured on the other, both ways, so every photo is judged by settings that never saw its case;
   mean and range over the repeats of: urgent sensitivity / specificity (grade 3 vs the rest),
   malignant reaching refer or urgent (grade >= 2 vs grade 1), the share of grade-3 photos (HAM10000:
   melanomas) given routine advice, ECE before and after, the detector's false-alarm rate;
3. the detector's AUROC per shift (in-distribution: the held-out photos as they are) for the
   combined score and its parts, beside today's cosine distance to class means, and the share of
   shifted photos it flags at the stored threshold. Far shifts are pictures made in code (scikit-learn's
   sample photos, drawings of a house, text, noise, flat colours, a phone-like snapshot); near shifts
   are the held-out photos changed (other cameras: bench/photo_shift.py's colour, blur, noise, JPEG;
   framing: further away on the rim's colour, cropped off centre; no dermoscope field: the photo's
   centre shrunk onto skin of its own skin colour, and the same softer and flatter, a clinical look).
Targets of the product (HAM10000 hold-out): urgent sensitivity >= 0.90 at specificity >= 0.75,
malignant refer-or-urgent >= 0.95, grade-3 routine <= 2 %, ECE <= 0.05, false alarms <= 5 %.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import photo_shift as ps

from inference.ml import calibration as cal
from inference.ml import triage as tri
from inference.ml.ood import COMPONENTS, combine, standardiser, threshold_for

TARGETS = {  # the product's targets (the tier targets used for the thresholds are the artefact's or --targets)
    "urgent_sensitivity": 0.90,
    "urgent_specificity": 0.75,
    "malignant_sensitivity": 0.95,
    "grade3_routine_max": 0.02,
    "ece_max": 0.05,
    "false_alarm_max": 0.05,
}


# ---------------------------------------------------------------------- cross-fitting on stored outputs
def crossfit(h: dict, tax, targets: dict, method: str, max_false_alarm: float, seed: int) -> dict:
    """Out-of-fold tiers, calibrated probabilities and detector flags of every held-out photo (2 folds
    over cases), and their metrics."""
    logp, y, case = h["log_fused"].astype(np.float64), h["labels"], h["case"]
    cases = np.unique(case)
    half = np.random.default_rng(seed).permutation(cases)[: len(cases) // 2]
    in_a = np.isin(case, half)
    q = np.zeros_like(logp)
    codes = np.zeros(len(y), int)
    flagged = np.zeros(len(y), bool)
    comps = {k: h[f"ood_{k}"].astype(np.float64) for k in COMPONENTS}
    temps = []
    for fit, ev in ((in_a, ~in_a), (~in_a, in_a)):
        T = cal.fit_temperature(logp[fit], y[fit])
        temps.append(T)
        tg = {**tri.DEFAULT_TARGETS, **targets}
        th = tri.choose_thresholds(
            cal.apply_temperature(logp[fit], T), y[fit], tax, tg["urgent"], tg["malignant"], tg["high_grade"]
        )["thresholds"]
        q[ev] = cal.apply_temperature(logp[ev], T)
        codes[ev] = tri.tier_codes(q[ev], tax, th)[0]
        norm = standardiser({k: v[fit] for k, v in comps.items()})
        thr = threshold_for(combine({k: v[fit] for k, v in comps.items()}, norm, method), max_false_alarm)
        flagged[ev] = combine({k: v[ev] for k, v in comps.items()}, norm, method) > thr
    m = tri.tier_metrics(codes, y, tax)
    return {
        "urgent_sensitivity": m["urgent"]["sensitivity"],
        "urgent_specificity": m["urgent"]["specificity"],
        "malignant_sensitivity": m["malignant"]["sensitivity"],
        "malignant_specificity": m["malignant"]["specificity"],
        "grade3_routine_share": m["grade3_routine_share"],
        "ece_before": cal.ece(np.exp(logp), y),
        "ece_after": cal.ece(q, y),
        "false_alarm": float(flagged.mean()),
        "temperatures": temps,
    }


def in_sample(h: dict, tax, cfg: dict) -> dict:
    logp, y = h["log_fused"].astype(np.float64), h["labels"]
    q = cal.apply_temperature(logp, cfg["temperature"])
    m = tri.tier_metrics(tri.tier_codes(q, tax, cfg["thresholds"])[0], y, tax)
    comps = {k: h[f"ood_{k}"] for k in COMPONENTS}
    norm = {k: (v["mean"], v["sd"]) for k, v in cfg["ood"]["standardisation"].items()}
    fa = float(np.mean(combine(comps, norm, cfg["ood"]["method"]) > cfg["ood"]["threshold"]))
    return {
        "urgent_sensitivity": m["urgent"]["sensitivity"],
        "urgent_specificity": m["urgent"]["specificity"],
        "malignant_sensitivity": m["malignant"]["sensitivity"],
        "malignant_specificity": m["malignant"]["specificity"],
        "grade3_routine_share": m["grade3_routine_share"],
        "ece_before": cal.ece(np.exp(logp), y),
        "ece_after": cal.ece(q, y),
        "false_alarm": fa,
        "temperatures": [cfg["temperature"]],
        "tier_by_grade": m["tier_by_grade"],
    }


# ---------------------------------------------------------------------- pictures made in code (far shifts)
def _house(rng, s=320):
    im = Image.new("RGB", (s, s), tuple(int(v) for v in rng.integers(150, 256, 3)))
    d = ImageDraw.Draw(im)
    x0, y0 = rng.integers(40, 90), rng.integers(130, 170)
    d.rectangle([x0, y0, x0 + 170, y0 + 130], fill=tuple(int(v) for v in rng.integers(60, 230, 3)), outline="black")
    d.polygon([(x0 - 15, y0), (x0 + 85, y0 - 90), (x0 + 185, y0)], fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
    d.rectangle([x0 + 70, y0 + 60, x0 + 105, y0 + 130], fill=(90, 50, 20))
    d.rectangle([x0 + 20, y0 + 25, x0 + 55, y0 + 55], fill=(180, 220, 255), outline="black")
    return im


def _text(rng, s=320):
    im = Image.new("RGB", (s, s), "white")
    d = ImageDraw.Draw(im)
    words = ["patient", "report", "skin", "lesion", "photo", "derm", "clinic", "date", "name", "scan"]
    for row in range(12):
        d.text((10, 8 + row * 26), " ".join(rng.choice(words, 5)), fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
    return im


def _noise(rng, s=320):
    return Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))


def _flat(rng, s=320):
    return Image.new("RGB", (s, s), tuple(int(v) for v in rng.integers(0, 256, 3)))


def _sample(rng, k):
    from sklearn.datasets import load_sample_images

    im = load_sample_images().images[k]
    h, w = im.shape[:2]
    c = int(rng.integers(200, min(h, w)))
    t, left = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
    return Image.fromarray(im[t : t + c, left : left + c])


def _phone(rng):
    """A phone snapshot: a scene, slightly blurred, noisy, JPEG-compressed, with a dark corner vignette."""
    im = np.asarray(_sample(rng, int(rng.integers(0, 2))).resize((320, 320))).astype(np.float32)
    yy, xx = np.mgrid[:320, :320]
    im *= (1 - 0.5 * (((yy - 160) ** 2 + (xx - 160) ** 2) / 160**2).clip(0, 1))[..., None]
    im += rng.normal(0, 6, im.shape)
    return Image.fromarray(ps.jpeg(60)(np.clip(im, 0, 255).astype(np.uint8)))


FAR = {
    "sample photo: china": lambda r: _sample(r, 0),
    "sample photo: flower": lambda r: _sample(r, 1),
    "drawing of a house": _house,
    "text": _text,
    "noise": _noise,
    "flat colour": _flat,
    "phone-like snapshot": _phone,
}


# ---------------------------------------------------------------------- changed held-out photos (near shifts)
def off_centre(im):
    h, w = im.shape[:2]
    return np.asarray(Image.fromarray(im[: h // 2, : w // 2]).resize((w, h), Image.BICUBIC))


def on_skin(factor):
    """No dermoscope field: the photo's centre (70 %, past any dark dermoscope rim) shrunk to ``factor``
    of the side on skin of the photo's own skin colour (median of its brighter half) with a little texture."""

    def f(im):
        h, w = im.shape[:2]
        x = ps.zoom_in(0.7)(im)
        lum = x.astype(np.float32).mean(2)
        skin = np.median(x[lum >= np.median(lum)], axis=0)
        rng = np.random.default_rng(int(x.sum()) % (2**32))
        out = np.clip(skin + rng.normal(0, 4, (h, w, 1)), 0, 255).astype(np.uint8)
        sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
        top, left = (h - sh) // 2, (w - sw) // 2
        out[top : top + sh, left : left + sw] = np.asarray(Image.fromarray(x).resize((sw, sh), Image.BILINEAR))
        return out

    return f


def clinical_look(im):
    """No dermoscope field, softer and flatter: a lesion photographed without a dermoscope."""
    x = on_skin(0.4)(im).astype(np.float32)
    x = x.mean(axis=(0, 1)) + 0.7 * (x - x.mean(axis=(0, 1)))
    return np.asarray(Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)))


NEAR = {
    **{f"camera: {k}": v for k, v in {**ps.SHIFTS["colour"], **ps.SHIFTS["optics"]}.items()},
    "framing: further away (x0.6 on skin)": ps.zoom_out(0.6),
    "no dermoscope field: centre x0.6 on skin": on_skin(0.6),
    "no dermoscope field: centre x0.4 on skin": on_skin(0.4),
    "framing: off-centre quarter": off_centre,
    "clinical look (x0.4 on skin, soft, flat)": clinical_look,
}


# ---------------------------------------------------------------------- running the model
def scores_of(P, u8) -> dict:
    """Component, combined and cosine scores of uint8 photos (N, 3, S, S) as the predictor sees them."""
    from inference.ml.infer import ood_scores

    feats = np.concatenate([P.probabilities(u8[s : s + 16])[2] for s in range(0, len(u8), 16)])
    comps = P.triage.ood.component_scores(feats)
    return {
        **comps,
        "combined": combine(comps, P.triage.ood.norm, P.triage.ood.method),
        "cosine": ood_scores(feats, P.ood_means),
    }


def shift_scores(P, records, limit: int, seed: int, far_n: int) -> dict:
    import torch

    from inference.ml.cache import build_cache
    from inference.ml.data import colour_constancy

    pick = np.sort(np.random.default_rng(seed).permutation(len(records))[:limit])
    raw, ok, _ = build_cache([records[i] for i in pick], P.size, None)
    raw = raw[torch.as_tensor(np.flatnonzero(ok))].numpy()

    def cc(im):
        return colour_constancy(im, P.colour).transpose(2, 0, 1)

    out = {
        "in-distribution (held-out photos)": scores_of(
            P, torch.from_numpy(np.stack([cc(im.transpose(1, 2, 0)) for im in raw]))
        )
    }
    for name, fn in NEAR.items():
        x = np.stack([cc(fn(np.ascontiguousarray(im.transpose(1, 2, 0)))) for im in raw])
        out["near | " + name] = scores_of(P, torch.from_numpy(x))
        print(f"  scored {name}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(seed)
    for name, make in FAR.items():
        out["far | " + name] = scores_of(P, torch.stack([P.to_uint8(make(rng)) for _ in range(far_n)]))
    return out


def auroc(id_scores, ood_scores) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return float(roc_auc_score(y, np.r_[id_scores, ood_scores]))


def _fmt(x, pct=False):
    return "  -  " if x is None else (f"{x:6.1%}" if pct else f"{x:.3f}")


def report_fit(name, rows: list[dict]):
    print(f"\n{name}")
    keys = [
        ("urgent_sensitivity", "urgent tier sensitivity (grade 3)", False),
        ("urgent_specificity", "urgent tier specificity", False),
        ("malignant_sensitivity", "malignant -> refer or urgent sensitivity", False),
        ("malignant_specificity", "benign -> routine (specificity)", False),
        ("grade3_routine_share", "grade-3 (melanoma) photos given routine", True),
        ("ece_before", "ECE (15 bins) before calibration", False),
        ("ece_after", "ECE (15 bins) after calibration", False),
        ("false_alarm", "unfamiliar false alarms, held-out photos", True),
    ]
    for k, label, pct in keys:
        v = np.array([r[k] for r in rows if r[k] is not None], dtype=float)
        if not len(v):
            print(f"  {label:44s}   -")
            continue
        rng = f"  (range {_fmt(v.min(), pct)} .. {_fmt(v.max(), pct)})" if len(v) > 1 else ""
        print(f"  {label:44s} {_fmt(float(v.mean()), pct)}{rng}")
    t = np.concatenate([r["temperatures"] for r in rows])
    print(f"  temperature(s): {', '.join(f'{x:.3f}' for x in t[:10])}{' ...' if len(t) > 10 else ''}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--repeats", type=int, default=5, help="random halvings of the held-out cases")
    ap.add_argument("--limit", type=int, default=300, help="held-out photos changed per near shift")
    ap.add_argument("--far", type=int, default=20, help="pictures made per far shift")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-shifts", action="store_true", help="only the tier and calibration numbers")
    ap.add_argument(
        "--targets",
        default=None,
        help="cross-fit with other target sensitivities, e.g. urgent=0.9,malignant=0.95,high_grade=0.98 "
        "(default: the artefact's)",
    )
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from inference.ml.evaluate import artefact_records
    from inference.ml.predict import Predictor

    P = Predictor.load(a.model)
    if P.triage is None:
        sys.exit(f"{a.model}: {tri.NO_CALIBRATION} (python -m inference.ml calibrate --model {a.model} --data DATA)")
    cfg, tax = P.triage.config, P.taxonomy
    h = tri.load_heldout(a.model)
    targets = {**tri.DEFAULT_TARGETS, **cfg["targets"]}
    for kv in filter(None, (a.targets or "").split(",")):
        k, _, v = kv.partition("=")
        if k.strip() not in tri.TARGET_KEYS:
            sys.exit(f"--targets: unknown target {k!r} (one of {', '.join(tri.TARGET_KEYS)})")
        targets[k.strip()] = float(v)
    print(
        f"{a.model}: {len(h['labels'])} held-out photos of {len(np.unique(h['case']))} cases; modality "
        f"{cfg['modality']}; targets {', '.join(f'{k} {v:.2f}' for k, v in targets.items())}; "
        f"detector {cfg['ood']['method']} (k = {cfg['ood']['k']})"
    )
    res = {"in_sample": in_sample(h, tax, cfg)}
    report_fit(
        f"in-sample (temperature {cfg['temperature']:.3f}, thresholds urgent "
        f"{_fmt(cfg['thresholds']['urgent'])}, malignant {_fmt(cfg['thresholds']['malignant'])}; fitted on "
        "these photos: optimistic)",
        [res["in_sample"]],
    )
    print(
        "  tiers per true grade: "
        + "; ".join(
            f"grade {g}: " + ", ".join(f"{k} {v}" for k, v in d.items())
            for g, d in res["in_sample"]["tier_by_grade"].items()
        )
    )
    res["crossfit"] = [
        crossfit(h, tax, targets, cfg["ood"]["method"], cfg["ood"]["max_false_alarm"], a.seed + r)
        for r in range(a.repeats)
    ]
    report_fit(
        f"2-fold cross-fitted over held-out cases ({a.repeats} random halvings; mean and range)", res["crossfit"]
    )
    cf = {
        k: float(np.mean([r[k] for r in res["crossfit"]]))
        for k in (
            "urgent_sensitivity",
            "urgent_specificity",
            "malignant_sensitivity",
            "grade3_routine_share",
            "ece_after",
            "false_alarm",
        )
    }
    checks = {
        "urgent sensitivity >= 0.90": cf["urgent_sensitivity"] >= TARGETS["urgent_sensitivity"],
        "urgent specificity >= 0.75": cf["urgent_specificity"] >= TARGETS["urgent_specificity"],
        "malignant refer-or-urgent >= 0.95": cf["malignant_sensitivity"] >= TARGETS["malignant_sensitivity"],
        "grade-3 routine <= 2 %": cf["grade3_routine_share"] <= TARGETS["grade3_routine_max"],
        "ECE after <= 0.05": cf["ece_after"] <= TARGETS["ece_max"],
        "false alarms <= 5 %": cf["false_alarm"] <= TARGETS["false_alarm_max"],
    }
    print("  targets (cross-fitted means): " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in checks.items()))
    res["targets_met"] = checks
    if not a.no_shifts:
        records, scope, _ = artefact_records(P, a.data, "test")
        print(
            f"\nunfamiliar-photo detector per shift ({scope}; near: {min(a.limit, len(records))} photos, "
            f"far: {a.far} pictures each); AUROC against the unchanged held-out photos, flagged share at "
            f"the stored threshold {cfg['ood']['threshold']:.3f}"
        )
        S = shift_scores(P, records, a.limit, a.seed, a.far)
        ref = S.pop("in-distribution (held-out photos)")
        thr = cfg["ood"]["threshold"]
        print(f"  {'shift':52s} {'combined':>8s} {'kNN':>6s} {'Mahal.':>6s} {'cosine':>6s}   flagged")
        res["shifts"] = {"in_distribution_flagged": float(np.mean(ref["combined"] > thr))}
        for name, sc in S.items():
            au = {k: auroc(ref[k], sc[k]) for k in ("combined", "knn", "mahalanobis", "cosine")}
            fl = float(np.mean(sc["combined"] > thr))
            res["shifts"][name] = {"auroc": au, "flagged": fl, "n": len(sc["combined"])}
            print(
                f"  {name:52s} {au['combined']:8.3f} {au['knn']:6.3f} {au['mahalanobis']:6.3f} "
                f"{au['cosine']:6.3f}   {fl:6.1%}"
            )
        print(
            f"  unchanged held-out photos flagged (in-sample threshold): {res['shifts']['in_distribution_flagged']:.1%}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
