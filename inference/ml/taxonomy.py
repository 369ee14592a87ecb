"""Two-level disease taxonomy (meta-classes -> sub-classes) and probability fusion.

Public API (stable):

- ``Taxonomy.from_dict(d)`` / ``Taxonomy.from_json(path)``; ``d`` is
  ``{"meta_classes": {"<meta>": ["<sub>", ...]}, "malignancy": {"<sub>": 1|2|3}}``
  ("malignancy" optional; extra keys such as "name", "version", "display_names" are kept).
- ``.meta_classes`` (ordered list), ``.sub_classes`` (ordered list: the sub-classes of the first
  meta-class, then the second, ...), ``.parent(sub)``, ``.grade(sub)`` (int or None),
  ``.has_grades``, ``.parent_index`` (numpy int array: meta index of every sub-class),
  ``.to_dict()``, ``.to_json(path)``.
- ``fuse(p_coarse, p_fine, taxonomy, method="product"|"hard"|"flat")`` (METHODS.md section 4)
  on numpy arrays or torch tensors, shape (C,) or (N, C):
  * flat:    p_i = p_fine_i
  * hard:    p'_i = [m(i) == argmax p_coarse] * p_fine_i  (not renormalised, exactly method 1;
             ties in argmax p_coarse go to the first meta-class in taxonomy order)
  * product: p''_i = p_coarse[m(i)] * p_fine_i, renormalised to sum 1 (method 2)
- ``meta_from_fine(p_fine, taxonomy)``: sum of fine probabilities per meta-class (two-stage).
- ``malignancy_score(p_fine, taxonomy)`` S = sum_i P_i s_i and ``malignancy_grade(S)``:
  grade 1 (benign) if S < 1.5, grade 2 (low malignancy) if 1.5 <= S < 2.5, else grade 3 (high).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

GRADE_THRESHOLDS = (1.5, 2.5)
GRADE_NAMES = {1: "benign", 2: "low malignancy", 3: "high malignancy"}
GRADE_ADVICE = {
    1: "self-monitor",
    2: "see a dermatologist at a nearby hospital",
    3: "go to a tertiary hospital urgently",
}


class TaxonomyError(DataError):
    """A taxonomy that cannot be used (names the class and what is wrong)."""


@dataclass
class Taxonomy:
    meta_classes: list[str]
    sub_classes: list[str]
    _parent: dict[str, str]
    _grades: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict) -> Taxonomy:
        if not isinstance(d, dict) or "meta_classes" not in d:
            raise TaxonomyError('taxonomy must be a JSON object with a "meta_classes" key')
        mc = d["meta_classes"]
        if not isinstance(mc, dict) or not mc:
            raise TaxonomyError('"meta_classes" must map each meta-class to a list of sub-classes')
        metas, subs, parent = [], [], {}
        for meta, children in mc.items():
            meta = str(meta)
            if isinstance(children, str) or not isinstance(children, (list, tuple)) or not children:
                raise TaxonomyError(f"meta-class {meta!r} must list at least one sub-class")
            metas.append(meta)
            for sub in children:
                sub = str(sub)
                if sub in parent:
                    if parent[sub] == meta:
                        raise TaxonomyError(f"sub-class {sub!r} is listed twice under meta-class {meta!r}")
                    raise TaxonomyError(
                        f"sub-class {sub!r} has two parents: {parent[sub]!r} and {meta!r} "
                        "(each sub-class must belong to exactly one meta-class)"
                    )
                parent[sub] = meta
                subs.append(sub)
        if set(metas) & set(subs):
            raise TaxonomyError(f"names used both as meta- and sub-class: {sorted(set(metas) & set(subs))}")
        grades = {}
        for sub, g in (d.get("malignancy") or {}).items():
            if sub not in parent:
                raise TaxonomyError(f"malignancy grade given for unknown sub-class {sub!r}")
            if int(g) not in (1, 2, 3) or float(g) != int(g):
                raise TaxonomyError(f"malignancy grade of {sub!r} must be 1, 2 or 3 (got {g!r})")
            grades[sub] = int(g)
        if grades and set(grades) != set(subs):
            missing = [s for s in subs if s not in grades]
            raise TaxonomyError(f"malignancy grades missing for sub-classes: {missing}")
        extra = {k: v for k, v in d.items() if k not in ("meta_classes", "malignancy")}
        return cls(metas, subs, parent, grades, extra)

    @classmethod
    def from_json(cls, path) -> Taxonomy:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d["meta_classes"] = {m: [s for s in self.sub_classes if self._parent[s] == m] for m in self.meta_classes}
        if self._grades:
            d["malignancy"] = {s: self._grades[s] for s in self.sub_classes}
        return d

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

    # ------------------------------------------------------------------ queries
    def parent(self, sub: str) -> str:
        return self._parent[sub]

    def grade(self, sub: str) -> int | None:
        return self._grades.get(sub)

    @property
    def has_grades(self) -> bool:
        return bool(self._grades)

    @property
    def parent_index(self) -> np.ndarray:
        mi = {m: i for i, m in enumerate(self.meta_classes)}
        return np.array([mi[self._parent[s]] for s in self.sub_classes], dtype=np.int64)

    @property
    def grade_vector(self) -> np.ndarray | None:
        if not self._grades:
            return None
        return np.array([self._grades[s] for s in self.sub_classes], dtype=np.float64)

    def children(self, meta: str) -> list[str]:
        return [s for s in self.sub_classes if self._parent[s] == meta]

    def display_name(self, name: str) -> str:
        return (self.extra.get("display_names") or {}).get(name, name)

    def __contains__(self, sub: str) -> bool:
        return sub in self._parent


# ---------------------------------------------------------------------- fusion
def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def fuse(p_coarse, p_fine, taxonomy: Taxonomy, method: str = "product"):
    """Fuse coarse (meta-class) and fine (sub-class) probabilities; see module docstring."""
    if method not in ("product", "hard", "flat"):
        raise ValueError(f"unknown fusion method {method!r} (use product, hard or flat)")
    torch_in = _is_torch(p_fine)
    if torch_in:
        import torch

        dev, dt = p_fine.device, p_fine.dtype
        pc = p_coarse.detach().cpu().double().numpy()
        pf = p_fine.detach().cpu().double().numpy()
    else:
        pc = np.asarray(p_coarse, dtype=np.float64)
        pf = np.asarray(p_fine, dtype=np.float64)
    single = pf.ndim == 1
    pc2, pf2 = np.atleast_2d(pc), np.atleast_2d(pf)
    pidx = taxonomy.parent_index
    if pf2.shape[1] != len(pidx) or pc2.shape[1] != len(taxonomy.meta_classes):
        raise ValueError("probability shapes do not match the taxonomy")
    if method == "flat":
        out = pf2.copy()
    elif method == "hard":
        win = np.argmax(pc2, axis=1)  # first maximum on ties
        out = pf2 * (pidx[None, :] == win[:, None])
    else:
        out = pf2 * pc2[:, pidx]
        s = out.sum(axis=1, keepdims=True)
        out = np.where(s > 0, out / np.where(s > 0, s, 1.0), pf2)
    if single:
        out = out[0]
    if torch_in:
        return torch.as_tensor(out, dtype=dt, device=dev)
    return out


def meta_from_fine(p_fine, taxonomy: Taxonomy) -> np.ndarray:
    """Two-stage coarse probabilities: sum of the fine probabilities of each meta-class."""
    pf = np.atleast_2d(np.asarray(p_fine, dtype=np.float64))
    out = np.zeros((pf.shape[0], len(taxonomy.meta_classes)))
    np.add.at(out.T, taxonomy.parent_index, pf.T)
    return out[0] if np.ndim(p_fine) == 1 else out


def malignancy_score(p_fine, taxonomy: Taxonomy):
    """S = sum_i P_i * s_i over the sub-class probabilities (None without grades)."""
    g = taxonomy.grade_vector
    if g is None:
        return None
    pf = np.asarray(p_fine, dtype=np.float64)
    pf = pf / np.clip(pf.sum(axis=-1, keepdims=True), 1e-12, None)
    return pf @ g


def malignancy_grade(score) -> int | np.ndarray:
    """Grade from S: 1 if S < 1.5, 2 if S < 2.5, else 3."""
    lo, hi = GRADE_THRESHOLDS
    s = np.asarray(score, dtype=np.float64)
    g = np.where(s < lo, 1, np.where(s < hi, 2, 3))
    return int(g) if g.ndim == 0 else g
