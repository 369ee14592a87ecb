"""Patient metadata (age, sex, body site) as a second source of evidence beside the photo.

METHODS.md section 8 (seed 003) lists metadata fusion as later work; this is its simplest sound
form, fitted on the training split in seconds and stored in the artefact as ``metadata.json``:

- a **per-field naive Bayes**: for each field f and value v, p(class | f = v) is counted on the
  training photos and smoothed toward the class prior with ``alpha`` pseudo-photos
  (``(n_cv + alpha * prior_c) / (n_v + alpha)``);
- a photo's probabilities from the image models are multiplied by
  ``prod_f [p(c | f = v_f) / prior_c] ** weight`` and renormalised (Bayes' rule when the fields
  and the photo are independent given the class; ``weight`` < 1 tempers it where they are not);
- a field that is **missing, "unknown" or a value never seen in training multiplies by 1**, so a
  photo without metadata keeps exactly the image models' probabilities. ("unknown" in the training
  data is not learnt as a value either: in HAM10000 it marks how a source recorded, not the
  patient.)

Fields and the column names they are read from (first present wins, case-insensitive):
``age`` (age, age_approx; a number of years, binned by decade, 80+ together), ``sex`` (sex,
gender; male/female, m/f), ``site`` (localization, site, body_site, anatom_site_general;
free text, lower-cased, e.g. "lower extremity").

There is one table per level: sub-classes (applied to the fine and fused probabilities) and
meta-classes (applied to the coarse model's), so each output counts the metadata once.

Public API: ``read_fields(meta) -> {"age", "sex", "site"}``, ``MetadataModel.fit(metas, y, classes)``
(``None`` when no training photo has any field), ``.factors(metas) -> (N, C)``,
``.apply(p, metas)``, ``.to_dict()`` / ``MetadataModel.from_dict(d)``, ``FIELDS``;
``fit_levels(metas, y_sub, taxonomy, alpha, weight) -> (sub-class model, meta-class model) | None``;
``fuse_with_metadata(p_coarse, p_fine, taxonomy, method, fine_mm, coarse_mm, metas)``: the fusion
methods of ``taxonomy.fuse`` with the metadata in (what ``Predictor`` serves and ``evaluate`` measures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FILE = "metadata.json"  # in the artefact: {"fine": MetadataModel dict, "coarse": ..., "fields": ...}
FIELDS = {
    "age": ("age", "age_approx"),
    "sex": ("sex", "gender"),
    "site": ("localization", "site", "body_site", "anatom_site_general"),
}
MISSING = {"", "unknown", "nan", "none", "null", "na", "n/a", "?"}
SEX = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}
AGE_MAX_BIN = 8  # decades 0-9, 10-19, ..., 70-79, then 80+


def _text(v) -> str | None:
    if v is None:
        return None
    s = " ".join(str(v).strip().lower().replace("_", " ").split())
    return None if s in MISSING else s


def age_bin(v) -> str | None:
    """Decade of an age in years ("0" for 0-9 ... "8" for 80 and over); None if not a valid age."""
    s = _text(v)
    if s is None:
        return None
    try:
        a = float(s)
    except ValueError:
        return None
    if not math.isfinite(a) or a < 0 or a > 130:
        return None
    return str(min(int(a // 10), AGE_MAX_BIN))


def read_fields(meta: dict | None) -> dict:
    """``{"age": decade bin or None, "sex": "male"/"female"/None, "site": text or None}`` from a
    record's metadata (any column names of ``FIELDS``, case-insensitive)."""
    low = {str(k).strip().lower(): v for k, v in (meta or {}).items()}
    out = {}
    for name, cols in FIELDS.items():
        raw = next((low[c] for c in cols if c in low and _text(low[c]) is not None), None)
        if name == "age":
            out[name] = age_bin(raw)
        elif name == "sex":
            out[name] = SEX.get(_text(raw) or "")
        else:
            out[name] = _text(raw)
    return out


@dataclass
class MetadataModel:
    classes: list[str]
    prior: list[float]
    tables: dict[str, dict[str, list[float]]]  # field -> value -> p(class | value)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    alpha: float = 20.0
    weight: float = 1.0

    @classmethod
    def fit(
        cls,
        metas: Sequence[dict],
        y: Sequence[int],
        classes: Sequence[str],
        alpha: float = 20.0,
        weight: float = 1.0,
        min_count: int = 1,
    ) -> MetadataModel | None:
        """Count p(class | value) per field on training photos (``metas``: raw metadata dicts,
        ``y``: class indices). Values seen fewer than ``min_count`` times are left out (factor 1)."""
        y = np.asarray(y, dtype=int)
        C = len(classes)
        if len(metas) != len(y):
            raise ValueError(f"{len(metas)} metadata rows for {len(y)} labels")
        if alpha <= 0:
            raise ValueError("alpha must be > 0")
        if not 0 <= weight <= 1:
            raise ValueError("weight must be in [0, 1]")
        prior = np.bincount(y, minlength=C).astype(float) + 1e-3
        prior /= prior.sum()
        rows = [read_fields(m) for m in metas]
        tables, counts = {}, {}
        for name in FIELDS:
            tally: dict[str, np.ndarray] = {}
            for r, c in zip(rows, y):
                v = r[name]
                if v is not None:
                    tally.setdefault(v, np.zeros(C))[c] += 1
            kept = {v: n for v, n in tally.items() if n.sum() >= min_count}
            if kept:
                tables[name] = {
                    v: ((n + alpha * prior) / (n.sum() + alpha)).round(6).tolist() for v, n in sorted(kept.items())
                }
                counts[name] = {v: int(n.sum()) for v, n in sorted(kept.items())}
        if not tables:
            return None
        return cls(list(classes), prior.round(6).tolist(), tables, counts, float(alpha), float(weight))

    def log_factors(self, metas: Sequence[dict]) -> np.ndarray:
        prior = np.asarray(self.prior)
        out = np.zeros((len(metas), len(self.classes)))
        for i, m in enumerate(metas):
            r = read_fields(m)
            for name, table in self.tables.items():
                p = table.get(r[name]) if r[name] is not None else None
                if p is not None:
                    out[i] += np.log(np.asarray(p) / prior)
        return self.weight * out

    def factors(self, metas: Sequence[dict]) -> np.ndarray:
        """(N, C) multipliers of each class's probability (1 where a photo has no usable field)."""
        return np.exp(self.log_factors(metas))

    def apply(self, p, metas: Sequence[dict] | None) -> np.ndarray:
        """Probabilities ``p`` (N, C) times the metadata factors, renormalised; unchanged without metadata."""
        p = np.asarray(p, dtype=np.float64)
        if metas is None:
            return p
        if len(metas) != len(p):
            raise ValueError(f"{len(metas)} metadata rows for {len(p)} photos")
        lf = self.log_factors(metas)
        q = p * np.exp(lf - lf.max(1, keepdims=True))
        s = q.sum(1, keepdims=True)
        return np.where(s > 0, q / np.where(s > 0, s, 1), p)

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "prior": self.prior,
            "tables": self.tables,
            "counts": self.counts,
            "alpha": self.alpha,
            "weight": self.weight,
            "fields": {k: list(v) for k, v in FIELDS.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> MetadataModel:
        return cls(
            list(d["classes"]),
            list(d["prior"]),
            {k: dict(v) for k, v in d["tables"].items()},
            dict(d.get("counts") or {}),
            float(d.get("alpha", 20.0)),
            float(d.get("weight", 1.0)),
        )


def fit_levels(metas: Sequence[dict], y_sub, taxonomy, alpha: float = 20.0, weight: float = 1.0):
    """The two tables a hierarchy needs, counted on the same training photos: sub-classes (``y_sub``)
    and their meta-classes. ``None`` when no photo has any field."""
    y_sub = np.asarray(y_sub, dtype=int)
    fine = MetadataModel.fit(metas, y_sub, taxonomy.sub_classes, alpha, weight)
    if fine is None:
        return None
    return fine, MetadataModel.fit(metas, taxonomy.parent_index[y_sub], taxonomy.meta_classes, alpha, weight)


def fuse_with_metadata(
    p_coarse,
    p_fine,
    taxonomy,
    method: str,
    fine_mm: MetadataModel | None,
    coarse_mm: MetadataModel | None,
    metas: Sequence[dict] | None,
):
    """(fused sub-class probabilities, coarse probabilities) with the metadata applied so that each
    output counts it once: flat = fine x sub-class factors; product = (coarse x fine, renormalised) x
    sub-class factors; hard = the gate of (coarse x meta-class factors) on fine x sub-class factors;
    coarse = coarse x meta-class factors. Without metadata or a model: ``taxonomy.fuse`` unchanged."""
    from .taxonomy import fuse

    if metas is None or fine_mm is None or coarse_mm is None:
        return fuse(p_coarse, p_fine, taxonomy, method), np.asarray(p_coarse)
    pc = coarse_mm.apply(p_coarse, metas)
    if method == "product":
        return fine_mm.apply(fuse(p_coarse, p_fine, taxonomy, "product"), metas), pc
    return fuse(pc, fine_mm.apply(p_fine, metas), taxonomy, method), pc
