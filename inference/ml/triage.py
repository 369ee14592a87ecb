"""Urgency tiers from calibrated probabilities, and when the model abstains.

Tiers (taxonomy grades, METHODS.md section 6): on the calibrated fused differential q,
``urgent mass`` = sum of q over high-grade malignant sub-classes (grade 3, e.g. mel) and
``malignant mass`` = sum over every malignant sub-class (grade >= 2: mel, bcc, akiec).

- urgent  if urgent mass >= thresholds["urgent"]     or the top-1 sub-class is grade 3;
- refer   if malignant mass >= thresholds["malignant"] or the top-1 sub-class is grade 2;
- routine otherwise.
The highest tier that applies wins, so advice is never softer than the photo's own top diagnosis.

Thresholds are chosen on the model's held-out photos for target sensitivities (defaults
``DEFAULT_TARGETS``: 0.90 of grade-3 photos urgent, 0.95 of grade >= 2 photos refer or urgent, and
0.98 of grade-3 photos refer or urgent, i.e. at most 2 % of high-grade malignancies given routine
advice; the refer threshold is the lower of the two its targets ask for). Each is
the largest threshold that passes ceil(target x (n + 1)) of the n positive held-out photos with
the rules above (the split-conformal count: the expected sensitivity on new photos is then at least
the target, where ceil(target x n) would reach it only on these), set halfway to the next positive
photo's mass. The sensitivity and specificity they gave are stored beside them.

The model abstains (tier None, ``abstain`` says why, ``reason`` in plain words) when its taxonomy
has no grades, the artefact has no triage calibration (``triage.json``, written by
``python -m inference.ml calibrate`` or at the end of training), the photo's modality is not the
one the model was trained on, or the photo looks unfamiliar (``ood.FeatureOOD``).

Artefact files (``triage_fit.fit_triage`` writes them, ``triage.json`` last):
- ``triage.json``: modality, modalities, temperature, with_metadata, calibration {ece_before, ece_after,
  nll_before, nll_after, bins, reliability_before, reliability_after}, targets, thresholds
  {urgent, malignant}, heldout {urgent, malignant: {threshold, target_sensitivity, sensitivity,
  specificity, n_pos, n_neg}, grade3_routine_share, tier_by_grade}, roc (per sub-class ROC points of
  the calibrated held-out probabilities), ood (detector description and threshold), files;
- ``heldout.safetensors``: log_fused (uncalibrated product-fused log-probabilities, N x C, with the
  photos' metadata where the artefact has a metadata model: "with_metadata"), log_fused_photo
  (the same from the photo alone),
  p_fine, p_coarse, labels (sub-class index), case (index into the manifest's sorted
  split.test_cases), ood_knn, ood_mahalanobis (the detector's component scores);
- ``triage_ood.safetensors``: the detector's statistics (``ood.FeatureOOD.state``).

Public API:
    thresholds_for_targets(model_dir, urgent=0.9, malignant=0.95, high_grade=0.98) -> dict  # stored held-out outputs
    choose_thresholds(prob, y, taxonomy, urgent=0.9, malignant=0.95, high_grade=0.98) -> dict  # the same on arrays
    tier_codes(prob, taxonomy, thresholds) -> (codes: 2 urgent / 1 refer / 0 routine, forced by top-1)
    tier_metrics(codes, y, taxonomy) -> dict
    TriageModel.load(model_dir, taxonomy) -> TriageModel | None
    model.calibrate(p_fused) ; model.assess(q, features, modalities, thresholds=None) -> list[dict]
    unavailable(taxonomy) -> dict    # the triage block of an artefact without triage.json
Each triage block: {"tier", "reason", "abstain" (None | "no_grades" | "no_calibration" | "modality"
| "unfamiliar"), "thresholds", "urgent_probability", "malignant_probability", "modality",
"model_modality", "unfamiliar", "unfamiliar_score", "unfamiliar_threshold"}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .calibration import apply_temperature, log_probs
from .taxonomy import Taxonomy

FILE = "triage.json"
HELDOUT_FILE = "heldout.safetensors"
OOD_FILE = "triage_ood.safetensors"
TIERS = {2: "urgent", 1: "refer", 0: "routine"}
DEFAULT_TARGETS = {"urgent": 0.90, "malignant": 0.95, "high_grade": 0.98}
TARGET_KEYS = tuple(DEFAULT_TARGETS)
DEFAULT_MODALITY = "dermoscopic"
MODALITY_ALIASES = {
    "dermoscopy": "dermoscopic",
    "dermatoscopic": "dermoscopic",
    "dermatoscopy": "dermoscopic",
    "dermoscope": "dermoscopic",
    "macroscopic": "clinical",
    "clinic": "clinical",
    "close-up": "clinical",
    "closeup": "clinical",
    "photo": "clinical",
}
NO_CALIBRATION = "this model has no triage calibration; run calibrate"
NO_GRADES = "this model's taxonomy has no malignancy grades, so it gives no triage advice"


def normalise_modality(m) -> str | None:
    if m is None:
        return None
    s = str(m).strip().lower()
    return MODALITY_ALIASES.get(s, s) or None


# ---------------------------------------------------------------------- tiers on arrays
def grade_masks(taxonomy: Taxonomy):
    """(urgent mask: grade 3, malignant mask: grade >= 2) over the sub-classes, or None without grades."""
    g = taxonomy.grade_vector
    if g is None or not (g >= 2).any():
        return None
    return g >= 3, g >= 2


def masses(prob, taxonomy: Taxonomy):
    u, m = grade_masks(taxonomy)
    p = np.atleast_2d(np.asarray(prob, dtype=np.float64))
    return p[:, u].sum(1), p[:, m].sum(1)


def plain_thresholds(th) -> dict:
    """{"urgent": float|None, "malignant": float|None} from plain numbers or ``choose_thresholds``' output."""
    out = {}
    for k in ("urgent", "malignant"):
        v = (th or {}).get(k)
        if isinstance(v, dict):
            v = v.get("threshold")
        if v is not None and not 0 <= float(v) <= 1:
            raise ValueError(f"{k} threshold must be a probability between 0 and 1, not {v}")
        out[k] = None if v is None else float(v)
    return out


def tier_codes(prob, taxonomy: Taxonomy, thresholds):
    """Tier of every photo (2 urgent, 1 refer, 0 routine) and whether the top-1 rule set it."""
    th = plain_thresholds(thresholds)
    u, m = grade_masks(taxonomy)
    p = np.atleast_2d(np.asarray(prob, dtype=np.float64))
    mu, mm = p[:, u].sum(1), p[:, m].sum(1)
    top_g = taxonomy.grade_vector[p.argmax(1)]
    by_u = mu >= th["urgent"] if th["urgent"] is not None else np.zeros(len(p), bool)
    by_m = mm >= th["malignant"] if th["malignant"] is not None else np.zeros(len(p), bool)
    codes = np.where(by_u, 2, np.where(by_m, 1, 0))
    floor = np.where(top_g >= 3, 2, np.where(top_g >= 2, 1, 0))
    return np.maximum(codes, floor), floor > codes


def _threshold_for(score, forced, target: float):
    """Largest threshold t with share(forced or score >= t) >= target among positives (None: none)."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], not {target}")
    eff = np.sort(np.where(forced, np.inf, np.asarray(score, dtype=np.float64)))[::-1]
    n = len(eff)
    if n == 0:
        return None
    # the k-th largest of n scores is passed by a new positive with probability k / (n + 1) on
    # average (exchangeability, as in split conformal prediction): k = ceil(target (n + 1)) keeps the
    # expected sensitivity on new photos at the target, not just on these
    k = min(n, max(1, math.ceil(target * (n + 1) - 1e-9)))
    tk = eff[k - 1]
    if np.isinf(tk):
        return 1.0  # the top-1 rule alone reaches the target
    below = eff[k] if k < n else 0.0
    return float((tk + below) / 2) if below < tk else float(tk)


def tier_metrics(codes, y, taxonomy: Taxonomy) -> dict:
    """Held-out sensitivity / specificity of the urgent tier (grade 3 vs rest) and of refer-or-urgent
    (grade >= 2 vs grade 1), the share of grade-3 photos given routine advice, tier counts per grade."""
    g = taxonomy.grade_vector[np.asarray(y, dtype=int)]
    codes = np.asarray(codes)

    def block(pos, hit):
        neg = ~pos
        return {
            "sensitivity": float(hit[pos].mean()) if pos.any() else None,
            "specificity": float((~hit[neg]).mean()) if neg.any() else None,
            "n_pos": int(pos.sum()),
            "n_neg": int(neg.sum()),
        }

    g3 = g >= 3
    return {
        "urgent": block(g3, codes == 2),
        "malignant": block(g >= 2, codes >= 1),
        "high_grade": block(g3, codes >= 1),
        "grade3_routine_share": float((codes[g3] == 0).mean()) if g3.any() else None,
        "tier_by_grade": {
            str(k): {TIERS[c]: int(((g == k) & (codes == c)).sum()) for c in (2, 1, 0)}
            for k in (1, 2, 3)
            if (g == k).any()
        },
    }


def choose_thresholds(
    prob,
    y,
    taxonomy: Taxonomy,
    urgent: float = DEFAULT_TARGETS["urgent"],
    malignant: float = DEFAULT_TARGETS["malignant"],
    high_grade: float = DEFAULT_TARGETS["high_grade"],
) -> dict:
    """Thresholds on calibrated held-out probabilities for the target sensitivities, with what they gave.

    The refer threshold passes ``malignant`` of the grade >= 2 photos and ``high_grade`` of the
    grade-3 photos not already urgent (the lower of the two thresholds).
    Returns {"targets", "thresholds": {urgent, malignant}, "urgent": {...}, "malignant": {...},
    "high_grade": {...}, "grade3_routine_share", "tier_by_grade", "n"} (``tier_metrics`` blocks plus
    threshold and target)."""
    if grade_masks(taxonomy) is None:
        raise ValueError("the taxonomy has no malignancy grades (or no malignant sub-class): no tiers")
    p = np.atleast_2d(np.asarray(prob, dtype=np.float64))
    y = np.asarray(y, dtype=int)
    g = taxonomy.grade_vector[y]
    mu, mm = masses(p, taxonomy)
    top_g = taxonomy.grade_vector[p.argmax(1)]
    pos_u = g >= 3
    t_u = _threshold_for(mu[pos_u], top_g[pos_u] >= 3, urgent)
    urgent_hit = (top_g >= 3) | (mu >= t_u if t_u is not None else False)
    refer_hit = urgent_hit | (top_g >= 2)
    cands = [
        _threshold_for(mm[pos], refer_hit[pos], target) for pos, target in ((g >= 2, malignant), (pos_u, high_grade))
    ]
    cands = [t for t in cands if t is not None]
    t_m = min(cands) if cands else None
    th = {"urgent": t_u, "malignant": t_m}
    codes, _ = tier_codes(p, taxonomy, th)
    rep = tier_metrics(codes, y, taxonomy)
    rep["urgent"].update(threshold=t_u, target_sensitivity=float(urgent))
    rep["malignant"].update(threshold=t_m, target_sensitivity=float(malignant))
    rep["high_grade"].update(threshold=t_m, target_sensitivity=float(high_grade))
    targets = {"urgent": float(urgent), "malignant": float(malignant), "high_grade": float(high_grade)}
    return {"targets": targets, "thresholds": th, **rep, "n": len(y)}


def load_heldout(model_dir) -> dict:
    """The stored held-out outputs of an artefact as numpy arrays (``HELDOUT_FILE``)."""
    from . import artefact as art

    path = Path(model_dir) / HELDOUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {NO_CALIBRATION}")
    return {k: v.numpy() for k, v in art.load_state(path).items()}


def thresholds_for_targets(
    model_dir,
    urgent: float = DEFAULT_TARGETS["urgent"],
    malignant: float = DEFAULT_TARGETS["malignant"],
    high_grade: float = DEFAULT_TARGETS["high_grade"],
) -> dict:
    """Thresholds for other target sensitivities from the artefact's stored held-out outputs (no
    retraining, no photos): ``choose_thresholds`` on the calibrated held-out probabilities. Pass the
    result (or its "thresholds") as ``Predictor.predict(..., thresholds=...)``."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    if cfg is None:
        raise FileNotFoundError(f"{model_dir / FILE} is missing: {NO_CALIBRATION}")
    tax = Taxonomy.from_json(model_dir / "taxonomy.json")
    h = load_heldout(model_dir)
    q = apply_temperature(h["log_fused"], cfg["temperature"])
    return choose_thresholds(q, h["labels"], tax, urgent, malignant, high_grade)


def read_config(model_dir) -> dict | None:
    p = Path(model_dir) / FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


# ---------------------------------------------------------------------- serving
def _block(tier=None, reason="", abstain=None, thresholds=None, **kw) -> dict:
    d = {
        "tier": tier,
        "reason": reason,
        "abstain": abstain,
        "thresholds": thresholds or {},
        "urgent_probability": None,
        "malignant_probability": None,
        "modality": None,
        "model_modality": None,
        "unfamiliar": None,
        "unfamiliar_score": None,
        "unfamiliar_threshold": None,
    }
    d.update(kw)
    return d


def unavailable(taxonomy: Taxonomy) -> dict:
    if grade_masks(taxonomy) is None:
        return _block(reason=NO_GRADES, abstain="no_grades")
    return _block(reason=NO_CALIBRATION, abstain="no_calibration")


def _names(taxonomy: Taxonomy, mask) -> str:
    return ", ".join(taxonomy.display_name(s) for s, m in zip(taxonomy.sub_classes, mask) if m)


class TriageModel:
    def __init__(self, taxonomy: Taxonomy, config: dict, ood=None):
        self.taxonomy = taxonomy
        self.config = config
        self.temperature = float(config["temperature"])
        self.thresholds = plain_thresholds(config["thresholds"])
        self.modalities = [normalise_modality(m) for m in config.get("modalities") or [config["modality"]]]
        self.modality = normalise_modality(config["modality"])
        self.ood = ood

    @classmethod
    def load(cls, model_dir, taxonomy: Taxonomy) -> TriageModel | None:
        cfg = read_config(model_dir)
        if cfg is None or grade_masks(taxonomy) is None:
            return None
        from . import artefact as art
        from .ood import FeatureOOD

        ood = None
        if cfg.get("ood") and (Path(model_dir) / OOD_FILE).is_file():
            ood = FeatureOOD.from_state(art.load_state(Path(model_dir) / OOD_FILE), cfg["ood"])
        return cls(taxonomy, cfg, ood)

    def calibrate(self, p_fused) -> np.ndarray:
        return apply_temperature(log_probs(p_fused), self.temperature)

    def assess(self, q, features=None, modalities=None, thresholds=None, shown=None) -> list[dict]:
        """Triage blocks of a batch: calibrated probabilities ``q`` (N, C), the fine model's pooled
        ``features`` (N, F) for the unfamiliar-photo check, one modality (or None: not given) per photo,
        optional per-site ``thresholds`` (default: the stored ones), and ``shown`` (N, C), the
        differential displayed when it is not ``q`` (hard or flat fusion): its top-1 also sets a floor."""
        tax = self.taxonomy
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        n = len(q)
        th = (
            self.thresholds
            if thresholds is None
            else {**self.thresholds, **{k: v for k, v in plain_thresholds(thresholds).items() if v is not None}}
        )
        mods = list(modalities) if modalities is not None else [None] * n
        if len(mods) != n:
            raise ValueError(f"{len(mods)} modalities for {n} photos")
        codes, forced = tier_codes(q, tax, th)
        top_idx = q.argmax(1)
        if shown is not None:  # never softer than the top-1 of the differential on screen either
            shown = np.atleast_2d(np.asarray(shown, dtype=np.float64))
            g = tax.grade_vector
            floor = np.where(g[shown.argmax(1)] >= 3, 2, np.where(g[shown.argmax(1)] >= 2, 1, 0))
            raise_ = floor > codes
            codes, forced = np.where(raise_, floor, codes), forced | raise_
            top_idx = np.where(raise_, shown.argmax(1), top_idx)
        mu, mm = masses(q, tax)
        un_score = self.ood.score(features) if self.ood is not None and features is not None else None
        u_mask, m_mask = grade_masks(tax)
        out = []
        for i in range(n):
            given = normalise_modality(mods[i])
            base = {
                "thresholds": dict(th),
                "urgent_probability": float(mu[i]),
                "malignant_probability": float(mm[i]),
                "modality": given,
                "model_modality": self.modality,
            }
            if un_score is not None:
                base.update(
                    unfamiliar=bool(un_score[i] > self.ood.threshold),
                    unfamiliar_score=float(un_score[i]),
                    unfamiliar_threshold=float(self.ood.threshold),
                )
            if given is not None and given not in self.modalities:
                out.append(
                    _block(
                        reason=f"this model was trained on {self.modality} photos; this photo is {given}, "
                        "so the model gives no advice on it",
                        abstain="modality",
                        **base,
                    )
                )
                continue
            if base.get("unfamiliar"):
                out.append(
                    _block(
                        reason="this photo is unlike the photos the model was trained on (not a skin "
                        "lesion, or taken another way), so the model gives no advice on it",
                        abstain="unfamiliar",
                        **base,
                    )
                )
                continue
            top = tax.sub_classes[int(top_idx[i])]
            c = int(codes[i])
            if c == 2 and forced[i]:
                why = f"the most likely diagnosis, {tax.display_name(top)}, is a high-grade malignancy"
            elif c == 2:
                why = (
                    f"high-grade malignant diagnoses ({_names(tax, u_mask)}) together reach {mu[i]:.0%}, "
                    f"at or above the urgent threshold of {th['urgent']:.0%}"
                )
            elif c == 1 and forced[i]:
                why = f"the most likely diagnosis, {tax.display_name(top)}, is a low-grade malignancy"
            elif c == 1:
                why = (
                    f"malignant diagnoses ({_names(tax, m_mask)}) together reach {mm[i]:.0%}, at or above the "
                    f"refer threshold of {th['malignant']:.0%}"
                )
            else:
                why = (
                    f"malignant diagnoses ({_names(tax, m_mask)}) together reach {mm[i]:.0%}, below the refer "
                    f"threshold of {th['malignant'] if th['malignant'] is not None else 1:.0%}"
                )
            out.append(_block(tier=TIERS[c], reason=why, **base))
        return out
