"""Evaluation: flat vs hierarchical fusion (hard gate, product), coarse level, two-stage binary
question, malignancy grading.

Public API:
- ``report_from_probs(p_fine, p_coarse, y_sub, taxonomy, positive=None, p_binary=None) -> dict``
  with keys ``flat``, ``hierarchical_hard``, ``hierarchical_product``, ``coarse``,
  ``coarse_from_fine`` (each: accuracy, balanced_accuracy, macro_f1, top3_accuracy, macro_auc,
  per_class{recall, precision, specificity, f1, auc, ci_low, ci_high}, confusion matrices),
  ``two_stage`` (when ``positive`` is given) and ``malignancy`` (when the taxonomy has grades).
- ``evaluate(model_dir, data_dir, positive=None, precision=None, views=None, members=None) -> dict``: runs the
  artefact as the portal serves it (``Predictor``: BN folded, precision, flip views) on the model's
  held-out split of ``data_dir`` when it is the training data (same fingerprint), else on all of it.
- ``model_probabilities(...)``: the probabilities behind ``evaluate`` (also used by bench scripts);
  ``artefact_records(P, data_dir, side)``: which photos of a directory it measures (or calibrates) on.
- ``format_report(report) -> str``: readable table.
"""

from __future__ import annotations

import numpy as np

from . import metrics as M
from .taxonomy import Taxonomy, fuse, malignancy_grade, malignancy_score, meta_from_fine


def _binary_block(y, score, name):
    y = np.asarray(y, dtype=int)
    if min(y.sum(), len(y) - y.sum()) < 2:  # a DeLong interval needs two of each class (metrics docstring)
        return {"name": name, "auc": None, "n_pos": int(y.sum()), "n": int(len(y))}
    a, lo, hi = M.delong_ci(y, score)
    yd = M.youden(y, score)
    return {"name": name, "auc": a, "ci_low": lo, "ci_high": hi, "youden": yd, "n_pos": int(y.sum()), "n": int(len(y))}


def report_from_probs(p_fine, p_coarse, y_sub, taxonomy: Taxonomy, positive=None, p_binary=None) -> dict:
    p_fine = np.asarray(p_fine, dtype=np.float64)
    p_coarse = np.asarray(p_coarse, dtype=np.float64)
    y_sub = np.asarray(y_sub, dtype=int)
    y_meta = taxonomy.parent_index[y_sub]
    subs, metas = taxonomy.sub_classes, taxonomy.meta_classes
    rep = {"n": int(len(y_sub))}
    rep["flat"] = M.classification_report_dict(y_sub, fuse(p_coarse, p_fine, taxonomy, "flat"), subs)
    rep["hierarchical_hard"] = M.classification_report_dict(y_sub, fuse(p_coarse, p_fine, taxonomy, "hard"), subs)
    p_prod = fuse(p_coarse, p_fine, taxonomy, "product")
    rep["hierarchical_product"] = M.classification_report_dict(y_sub, p_prod, subs)
    rep["coarse"] = M.classification_report_dict(y_meta, p_coarse, metas)
    rep["coarse_from_fine"] = M.classification_report_dict(y_meta, meta_from_fine(p_fine, taxonomy), metas)
    rep["product_minus_flat"] = {
        k: rep["hierarchical_product"][k] - rep["flat"][k]
        for k in ("accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy")
    }
    if len(y_sub):
        p_flat = fuse(p_coarse, p_fine, taxonomy, "flat")
        rep["product_minus_flat_bootstrap"] = M.paired_bootstrap(y_sub, p_flat.argmax(1), p_prod.argmax(1), len(subs))
    if positive:
        pos = np.isin(np.array(subs), list(positive))
        yb = pos[y_sub].astype(int)
        ts = {
            "positive": list(positive),
            "two_stage_fine": _binary_block(yb, p_fine[:, pos].sum(1), "two-stage (sum of fine probabilities)"),
            "two_stage_product": _binary_block(yb, p_prod[:, pos].sum(1), "two-stage on product-fused probabilities"),
        }
        if p_binary is not None:
            ts["single_stage"] = _binary_block(yb, p_binary, "single-stage binary model")
            if ts["single_stage"]["auc"] is not None and ts["two_stage_fine"]["auc"] is not None:
                ts["delong_two_stage_vs_single"] = M.delong_test(yb, p_fine[:, pos].sum(1), p_binary)
        rep["two_stage"] = ts
    if taxonomy.has_grades:
        mal = {
            "thresholds": "grade 1 if S < 1.5, grade 2 if 1.5 <= S < 2.5, else 3",
            "score_source": "product-fused probabilities",
        }
        g = taxonomy.grade_vector.astype(int)
        y_grade = g[y_sub]
        S = malignancy_score(p_prod, taxonomy)
        pg = malignancy_grade(S)
        per = {}
        for k in (1, 2, 3):
            if not (g == k).any():
                continue
            mass = p_prod[:, g == k].sum(1)
            per[str(k)] = _binary_block((y_grade == k).astype(int), mass, f"grade {k} one-vs-rest (grade mass)")
            per[str(k)]["score_auc"] = (
                _binary_block((y_grade >= k).astype(int), S, f"S for grade >= {k}") if k > 1 else None
            )
        from sklearn.metrics import balanced_accuracy_score, confusion_matrix

        mal["per_grade"] = per
        mal["grade_accuracy"] = float((pg == y_grade).mean())
        mal["grade_balanced_accuracy"] = float(balanced_accuracy_score(y_grade, pg))
        mal["grade_confusion_matrix"] = confusion_matrix(y_grade, pg, labels=[1, 2, 3]).tolist()
        rep["malignancy"] = mal
    return rep


def metadata_report(p_fine, p_coarse, y_sub, taxonomy: Taxonomy, fine_mm, coarse_mm, metas) -> dict:
    """The photo models with the metadata model applied (``Predictor.fuse``'s rules): ``flat``,
    ``hierarchical_hard``, ``hierarchical_product``, ``coarse`` as in ``report_from_probs``, plus
    ``with_minus_without`` (paired bootstrap of flat and product), ``with_metadata_share`` (photos
    with at least one usable field) and ``fields`` (values per field the model knows)."""
    from .metadata import fuse_with_metadata

    y_sub = np.asarray(y_sub, dtype=int)
    subs, metas_ = taxonomy.sub_classes, taxonomy.meta_classes
    flat0, prod0 = fuse(p_coarse, p_fine, taxonomy, "flat"), fuse(p_coarse, p_fine, taxonomy, "product")
    (flat1, pc), (prod1, _), (hard1, _) = (
        fuse_with_metadata(p_coarse, p_fine, taxonomy, m, fine_mm, coarse_mm, metas)
        for m in ("flat", "product", "hard")
    )
    rep = {
        "flat": M.classification_report_dict(y_sub, flat1, subs),
        "hierarchical_hard": M.classification_report_dict(y_sub, hard1, subs),
        "hierarchical_product": M.classification_report_dict(y_sub, prod1, subs),
        "coarse": M.classification_report_dict(taxonomy.parent_index[y_sub], pc, metas_),
        "with_metadata_share": float(np.mean(np.any(fine_mm.log_factors(metas) != 0, axis=1))) if len(metas) else 0.0,
        "fields": {k: len(v) for k, v in fine_mm.tables.items()},
        "weight": fine_mm.weight,
    }
    if len(y_sub):
        rep["with_minus_without"] = {
            "flat": M.paired_bootstrap(y_sub, flat0.argmax(1), flat1.argmax(1), len(subs)),
            "hierarchical_product": M.paired_bootstrap(y_sub, prod0.argmax(1), prod1.argmax(1), len(subs)),
        }
        rep["product_minus_flat_bootstrap"] = M.paired_bootstrap(y_sub, flat1.argmax(1), prod1.argmax(1), len(subs))
    return rep


def artefact_records(P, data_dir, side: str = "test"):
    """The photos of ``data_dir`` an artefact (a loaded ``Predictor``) is measured or calibrated on.

    When ``data_dir`` is the artefact's training data (same fingerprint) ``side`` picks its held-out
    split ("test", for evaluation) or its training split ("train", for int8 calibration), so the
    held-out photos never shape what is measured on them; otherwise every photo of the directory.
    Returns ``(records, scope, skipped_labels)``."""
    from .data import data_fingerprint, filter_to_taxonomy, read_dataset, split_by_cases

    if side not in ("test", "train"):
        raise ValueError(f"side must be 'test' or 'train', not {side!r}")
    records, _ = read_dataset(data_dir)
    records, skipped = filter_to_taxonomy(records, P.taxonomy)
    man = P.manifest
    if data_fingerprint(records) == man["data"]["fingerprint"] and man["split"].get("test_cases"):
        tr, te = split_by_cases(records, set(man["split"]["test_cases"]))
        if side == "test":
            return [records[i] for i in te], "held-out split of the training data", skipped
        return [records[i] for i in tr], "training split", skipped
    return records, "all images of the directory", skipped


def model_probabilities(
    model_dir,
    data_dir,
    precision: str | None = None,
    batch_size: int = 8,
    views: int | None = None,
    progress=None,
    members: int | None = None,
    photo_transform=None,
    size: int | None = None,
    device: str | None = None,
) -> dict:
    """Run an artefact on ``data_dir`` the way the portal serves it (``Predictor.probabilities``).

    ``size`` (optional) feeds the photos at another input size than the artefact was trained at
    (the network pools globally, so any size runs): does a 160 px model see more at 192 or 224 px?

    ``photo_transform`` (optional) changes every decoded photo (uint8 H x W x 3, after resizing,
    before the artefact's colour constancy) the way another camera or light would, e.g. a colour
    cast (``bench/photo_shift.py``).

    Uses the model's held-out split when ``data_dir`` is its training data (same fingerprint), else
    every image. Returns {predictor, y, records (the photos measured, in order), p_fine, p_coarse,
    p_binary, scope, skipped_labels, bad_images}.
    """
    import torch

    from .cache import build_cache, default_cache_dir, subset
    from .data import colour_constancy
    from .infer import model_outputs
    from .predict import Predictor

    P = Predictor.load(model_dir, precision=precision, members=members, device=device)
    if views is not None:
        P.tta, P.tta_views = views > 1, views
    if size is not None:
        if not 32 <= int(size) <= 1024:
            raise ValueError(f"size must be between 32 and 1024 px, not {size}")
        P.size = int(size)
    tax = P.taxonomy
    records, scope, skipped = artefact_records(P, data_dir, "test")
    if photo_transform is None:  # decoded once into the disk cache and read batch by batch (bounded memory)
        images, ok, bad = build_cache(records, P.size, default_cache_dir() or None, progress=progress, colour=P.colour)
    else:
        images, ok, bad = build_cache(records, P.size, None, progress=progress)
        images = (
            torch.from_numpy(
                np.stack(
                    [
                        colour_constancy(photo_transform(im.transpose(1, 2, 0)), P.colour).transpose(2, 0, 1)
                        for im in images.numpy()
                    ]
                )
            )
            if len(images)
            else images
        )
    keep = np.flatnonzero(ok)
    records = [records[i] for i in keep]
    images = subset(images, keep)
    sub_idx = {s: i for i, s in enumerate(tax.sub_classes)}
    y = np.array([sub_idx[r.label] for r in records], dtype=int)
    pf, pc = [], []
    for s in range(0, len(images), batch_size):
        f, c, _ = P.probabilities(images[s : s + batch_size])
        pf.append(f)
        pc.append(c)
    pb = None
    if P.binary_model is not None:
        pb = model_outputs(P.binary_model, images, P.mean, P.std, batch_size, P.tta)[:, 1]
    C, K = len(tax.sub_classes), len(tax.meta_classes)
    return {
        "predictor": P,
        "y": y,
        "records": records,
        "scope": scope,
        "skipped_labels": skipped,
        "bad_images": bad,
        "p_fine": np.concatenate(pf) if pf else np.zeros((0, C)),
        "p_coarse": np.concatenate(pc) if pc else np.zeros((0, K)),
        "p_binary": pb,
    }


def evaluate(
    model_dir,
    data_dir,
    positive=None,
    batch_size: int = 8,
    progress=None,
    precision: str | None = None,
    views: int | None = None,
    members: int | None = None,
    device: str | None = None,
) -> dict:
    R = model_probabilities(model_dir, data_dir, precision, batch_size, views, progress, members, device=device)
    P = R["predictor"]
    man = P.manifest
    if positive is None:
        positive = man.get("positive")
    pb = R["p_binary"] if positive and list(positive) == list(man.get("positive") or []) else None
    rep = report_from_probs(R["p_fine"], R["p_coarse"], R["y"], P.taxonomy, positive=positive, p_binary=pb)
    rep["scope"] = R["scope"]
    rep["skipped_labels"] = R["skipped_labels"]
    rep["bad_images"] = R["bad_images"]
    rep["precision"] = P.precision
    rep["tta_views"] = P.tta_views if P.tta else 1
    rep["fine_members"] = len(P.fine_models)
    if P.metadata_fine is not None:
        rep["with_metadata"] = metadata_report(
            R["p_fine"],
            R["p_coarse"],
            R["y"],
            P.taxonomy,
            P.metadata_fine,
            P.metadata_coarse,
            [r.meta for r in R["records"]],
        )
    return rep


def _f(x, nd=3):
    return "  -  " if x is None else f"{x:.{nd}f}"


def format_report(rep: dict) -> str:
    lines = []
    if "scope" in rep:
        lines.append(
            f"Evaluated on: {rep['scope']} ({rep['n']} images)"
            + (f", {rep['precision']}, {rep['tta_views']} view(s) per photo" if "precision" in rep else "")
            + (f", {rep['fine_members']} fine models" if rep.get("fine_members", 1) > 1 else "")
        )
    if rep.get("skipped_labels"):
        lines.append(
            "Skipped labels not in the taxonomy: " + ", ".join(f"{k}: {v}" for k, v in rep["skipped_labels"].items())
        )
    if rep.get("bad_images"):
        lines.append(
            f"Unreadable images ({len(rep['bad_images'])}): "
            + ", ".join(f"{a} ({b})" for a, b in rep["bad_images"][:20])
        )
    lines.append(f"{'level':24s} {'acc':>6s} {'balacc':>6s} {'mF1':>6s} {'top3':>6s} {'mAUC':>6s}")
    for k in ("flat", "hierarchical_hard", "hierarchical_product", "coarse", "coarse_from_fine"):
        r = rep[k]
        lines.append(
            f"{k:24s} {_f(r['accuracy'])} {_f(r['balanced_accuracy'])} {_f(r['macro_f1'])} "
            f"{_f(r['top3_accuracy'])} {_f(r['macro_auc'])}"
        )
    d = rep.get("product_minus_flat")
    if d:
        lines.append("product - flat: " + ", ".join(f"{k} {v:+.4f}" for k, v in d.items()))
    b = rep.get("product_minus_flat_bootstrap")
    if b:
        lines.append(
            "  95% CI (class-stratified paired bootstrap, "
            + str(b["n_boot"])
            + " resamples): "
            + ", ".join(
                f"{k} [{b[k]['ci_low']:+.4f}, {b[k]['ci_high']:+.4f}]" for k in ("balanced_accuracy", "macro_f1")
            )
        )
    wm = rep.get("with_metadata")
    if wm:
        lines.append(
            f"\nwith patient metadata ({', '.join(f'{k}: {n} values' for k, n in wm['fields'].items())}; "
            f"{wm['with_metadata_share']:.0%} of these photos carry a usable field):"
        )
        for k in ("flat", "hierarchical_hard", "hierarchical_product", "coarse"):
            r = wm[k]
            lines.append(
                f"{k:24s} {_f(r['accuracy'])} {_f(r['balanced_accuracy'])} {_f(r['macro_f1'])} "
                f"{_f(r['top3_accuracy'])} {_f(r['macro_auc'])}"
            )
        for k, b in (wm.get("with_minus_without") or {}).items():
            lines.append(
                f"  {k} with - without metadata: "
                + ", ".join(
                    f"{m} {b[m]['diff']:+.4f} [{b[m]['ci_low']:+.4f}, {b[m]['ci_high']:+.4f}]"
                    for m in ("balanced_accuracy", "macro_f1")
                )
            )
    for k in ("hierarchical_product", "coarse"):
        r = rep[k]
        lines.append(
            f"\nper class ({k}): {'n':>5s} {'recall':>7s} {'prec':>7s} {'spec':>7s} {'AUC':>6s} {'95% CI (DeLong)':>16s}"
        )
        for c, v in r["per_class"].items():
            ci = f"[{_f(v['ci_low'])}, {_f(v['ci_high'])}]" if v["auc"] is not None else ""
            lines.append(
                f"  {c:28s} {v['support']:5d} {_f(v['recall']):>7s} {_f(v['precision']):>7s} "
                f"{_f(v['specificity']):>7s} {_f(v['auc']):>6s} {ci}"
            )
        lines.append("  confusion matrix (row %): " + " | ".join(r["classes"]))
        for c, row in zip(r["classes"], r["confusion_matrix_row_percent"]):
            lines.append(f"  {c:>16s} " + " ".join(f"{x:6.1f}" for x in row))
    ts = rep.get("two_stage")
    if ts:
        lines.append(f"\nbinary question: positive = {ts['positive']}")
        for k in ("two_stage_fine", "two_stage_product", "single_stage"):
            if k in ts and ts[k].get("auc") is not None:
                b = ts[k]
                lines.append(
                    f"  {b['name']:45s} AUC {b['auc']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}]  "
                    f"Youden sens {b['youden']['sensitivity']:.3f} spec {b['youden']['specificity']:.3f}"
                )
        if "delong_two_stage_vs_single" in ts:
            t = ts["delong_two_stage_vs_single"]
            lines.append(
                f"  DeLong paired test two-stage vs single-stage: diff {t['diff']:+.4f}, p = {t['p_value']:.4g}"
            )
    mal = rep.get("malignancy")
    if mal:
        lines.append(
            f"\nmalignancy grading ({mal['thresholds']}): grade accuracy {mal['grade_accuracy']:.3f}, "
            f"balanced {mal['grade_balanced_accuracy']:.3f}"
        )
        for k, b in mal["per_grade"].items():
            if b.get("auc") is not None:
                lines.append(
                    f"  grade {k} one-vs-rest AUC {b['auc']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] (n_pos {b['n_pos']})"
                )
    return "\n".join(lines)
