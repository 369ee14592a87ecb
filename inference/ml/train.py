"""Training: fine model (sub-classes) -> granularity transfer -> coarse model (meta-classes).

Public API (stable):

    from inference.ml.train import TrainConfig, train, TrainingCancelled
    path = train(TrainConfig(data="DIR", taxonomy="tax.json", out="models/x"),
                 progress=lambda d: print(d), should_stop=lambda: False)

``progress`` receives dicts with keys stage ("cache" | "fine" | "coarse" | "binary" | "evaluate"),
epoch, epochs, batch, batches, loss, eta_seconds (remaining time of the stage), images_per_second,
elapsed_seconds (time in the stage so far).
``should_stop()`` is polled between batches; when it returns True ``TrainingCancelled`` is raised
and no completed artefact is left (``model.json`` is written last, after everything else).
Checkpoints are written to ``<out>/.work`` after every epoch; calling ``train`` again with the same
config resumes from the last completed epoch.

Defaults (the recipe used for the HAM10000 benchmark, chosen for a 2-core CPU and ~1 hour):
EfficientNet-Lite0 from ImageNet at 160 px, channels_last, stem + first 3 blocks frozen (fine
model, 12 epochs); coarse model from the fine model up to block 11 of 16 and ImageNet after it,
all of it fine-tuned for 6 epochs with each photo weighted by its sub-class's inverse frequency
(see coarse_class_balance); on training splits under 1,200 photos both stages get up to 3x the
epochs (epochs_for);
AdamW (measured against the thesis SGD recipe: bench/RESULTS.md, "Recipe probes"),
cosine schedule with 50-batch burn-in (power 4), sqrt-inverse-frequency class weights (fine),
the thesis augmentation (HSV, affine, centre-sparing Cutout) + flips + another camera's optics
(blur, sensor noise); one view at evaluation (flip TTA optional, ``tta``).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import artefact as art
from . import budget
from .budget import DEFAULT_BUDGET_MINUTES, choose_image_size
from .errors import TrainingCancelled
from .data import (AugmentConfig, Augmenter, BatchMixer, build_cache, check_colour_constancy, data_fingerprint,
                   filter_to_taxonomy, holdout_split, kfold_split, read_dataset, split_by_cases)
from .infer import ThreadTuner, model_outputs, ood_fit
from .networks import (Classifier, check_drop_path, freeze_first_blocks, freeze_prefixes, frozen_modules, layer_depth,
                       parse_cut, transfer_cut, transferred_prefixes)
from .taxonomy import Taxonomy


def _one_thread():
    # The augmenting thread must not start its own intra-op team: with 2 torch threads in the
    # training step plus 2 in the augmenter, 2 cores spin at barriers (measured 21 vs 34 img/s
    # at 192 px, bench/train_step_speed.py).
    torch.set_num_threads(1)


_POOL = ThreadPoolExecutor(1, thread_name_prefix="augment", initializer=_one_thread)


def keep_freed_memory():
    """Ask glibc malloc to keep freed blocks instead of unmapping them after every step.

    Activations above 32 MB (batch 32 at 192 px and more) are otherwise mmap'ed and unmapped on
    every step, and the kernel zeroes fresh pages each time (half the CPU time went to the
    kernel). No-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    ok = mallopt(M_MMAP_MAX, 0) == 1
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    mallopt(M_TOP_PAD, 256 << 20)
    return ok


class _NoTuner:
    threads = None

    def begin(self):
        pass

    def end(self, items=1):
        pass


class WeightAverage:
    """Exponential moving average of a model's parameters and BatchNorm statistics.

    decay_t = min(decay, (1 + t) / (10 + t)) so that the first steps do not drag the average
    towards the starting weights. ``copy_to(model)`` replaces the model's weights by the average.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.steps = 0
        self.names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
        sd = model.state_dict()
        self.avg = [sd[k].detach().clone() for k in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        sd = model.state_dict()
        cur = [sd[k].detach() for k in self.names]
        torch._foreach_lerp_(self.avg, cur, 1.0 - d)
        self.steps += 1

    def copy_to(self, model: torch.nn.Module):
        sd = model.state_dict()
        with torch.no_grad():
            for k, v in zip(self.names, self.avg):
                sd[k].copy_(v)

    def state_dict(self) -> dict:
        return {"steps": torch.tensor(self.steps), **{f"avg.{k}": v for k, v in zip(self.names, self.avg)}}

    def load_state_dict(self, st: dict):
        self.steps = int(st["steps"])
        self.avg = [st[f"avg.{k}"].clone() for k in self.names]


@dataclass
class TrainConfig:
    data: str
    taxonomy: str | dict
    out: str
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    image_size: int | None = None       # None: 224 px if this machine's estimated training time fits
                                        # image_budget_minutes, else 224 with progressive_size 160 if that
                                        # fits, else 160 (budget.py; bench/RESULTS.md sessions 14 and 21)
    image_budget_minutes: float = DEFAULT_BUDGET_MINUTES
    progressive_size: int | None = None  # progressive resizing of the fine model: the first progressive_share
                                        # of its epochs see the photos downscaled to this size, the rest
                                        # image_size (the weight average restarts at the switch; the binary
                                        # baseline trains the same way, the coarse model at image_size); None = off
    progressive_share: float = budget.DEFAULT_PROGRESSIVE_SHARE
    colour_constancy: str = "shades_of_gray"  # every photo's illuminant made grey before training and
                                        # prediction (data.colour_constancy; "none" = photos as taken).
                                        # HAM10000 hold-out: +0.033 product balanced accuracy, and a
                                        # colour cast costs 0.5-3 points instead of 6-18 (bench/RESULTS.md)
    epochs: int | None = None           # fine model; None: 12 (16 measured worse on HAM10000), more on
                                        # training splits under 1,200 photos (epochs_for)
    coarse_epochs: int | None = None    # None: half the fine model's (epochs_for)
    transfer_cut: str = "auto"          # "none" | "all" | block index | "auto" (= 2/3 of the blocks)
    freeze_transferred: bool = True     # the coarse model trains only the blocks after the cut: its stage
                                        # is 2.4x faster, serving computes the shared part once (1.5x),
                                        # product fusion within noise of the whole coarse model's
                                        # (bench/RESULTS.md session 16); False trains it whole
    freeze_blocks: int = 3              # fine model: stem + first N blocks frozen (-1: none; trained whole it took
                                        # 1.2x the time for product +0.013 / -0.011, accuracy -0.015: session 18;
                                        # with LP-FT heads 1.4x, +0.021 / +0.014 on split 4, -0.004 / -0.017 on
                                        # split 1: session 35)
    batch_size: int = 32
    optimizer: str = "adamw"            # "adamw" | "sgd" (thesis)
    lr0: float = 1e-3
    lrf: float = 0.01                   # final lr = lr0 * lrf (cosine)
    momentum: float = 0.951
    weight_decay: float = 0.01
    burn_in: int = 50
    burn_in_power: float = 4.0
    class_balance: str = "sqrt_weights"  # "none" | "weights" | "sqrt_weights" | "focal" | "sampler" | "logit_adjust"
    reweight_from: float = 0.0          # deferred re-weighting (Cao et al., NeurIPS 2019): the fine models' (and
                                        # the binary baseline's) first share of epochs trains unweighted,
                                        # class_balance's photo weights apply from epoch round(share * epochs);
                                        # 0: weighted throughout. The coarse model keeps its weights throughout.
                                        # HAM10000 split 0, 0.67 with "weights": accuracy -0.05, macro F1 -0.06
                                        # against the default (bench/RESULTS.md session 26)
    logit_adjust_tau: float = 1.0       # "logit_adjust": the loss sees logits + tau * log(training prior)
                                        # (Menon et al., ICLR 2021); prediction uses the plain logits, whose
                                        # softmax then carries the prior to the power 1 - tau (1: none, the
                                        # balanced-error optimum; 0.5: the prior sqrt_weights aims at).
                                        # HAM10000 split 0 against sqrt_weights: 0.5 flat balanced accuracy
                                        # and macro F1 -0.041; 1 trades accuracy (-0.050) for balanced
                                        # accuracy (+0.027), no better than a prior shift (session 19)
    # The coarse model is trained with every photo weighted by the inverse frequency of its
    # *sub-class* ("subclass_weights"): product fusion multiplies its probabilities with the fine
    # model's, which already carry the class prior, so a coarse model trained on the natural prior
    # counts it twice (product - flat balanced accuracy -0.015 with sqrt weights); balancing the
    # meta-classes instead ("weights", the default until session 11) let nevi define what
    # "melanocytic" looks like, so melanomas the fine model half-assigned to bkl moved to bkl
    # (product melanoma recall 0.41 against flat 0.59). Sub-class weights, same fine model,
    # product: balanced accuracy +0.041 / +0.011 / -0.011, macro F1 +0.018 / +0.015 / +0.003 on
    # splits 0 / 1 / 2 (bench/RESULTS.md). None: same as class_balance. "subclass_weights" / "subclass_sqrt_weights" weight
    # by the photo's sub-class, the others by its meta-class.
    coarse_class_balance: str | None = "subclass_weights"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    layer_decay: float = 1.0            # <1: layer-wise learning rates, block k of D at lr * layer_decay ** (D - k)
    drop_path: float = 0.2              # stochastic depth of the trained blocks' residual branches, rising
                                        # linearly to this rate at the last block (0 = off). HAM10000, five
                                        # splits against 0: product balanced accuracy and macro F1 +0.005 /
                                        # +0.006 on average, within the training's own spread (on split 0,
                                        # three seeds paired: -0.002 / -0.019), same cost (bench/RESULTS.md,
                                        # sessions 37-40)
    ema_decay: float = 0.998            # >0: keep an exponential moving average of the weights and use it (0 = off)
    head_init: str = "probe"            # "probe" | "random": before fine-tuning, fit the new head as a linear probe
                                        # (LP-FT, Kumar et al., ICLR 2022) on the network's features of the training
                                        # photos as fine-tuning meets them (augmented, BatchNorm on batch statistics),
                                        # with the stage's photo weights, L2 chosen on a held-out fifth; every stage.
                                        # HAM10000 against "random", paired on splits 0 / 1 / 2: product accuracy +0.021 /
                                        # +0.012 / +0.009, balanced accuracy +0.011 / +0.006 / +0.016, macro F1 +0.033 /
                                        # +0.037 / +0.024 (bench/RESULTS.md, sessions 32-34)
    fine_models: int = 1                # fine models (ensemble members: same split, other seeds); the
                                        # prediction averages their probabilities; the coarse model
                                        # is transferred from the first one
    member_class_balance: str | None = None  # class balance of fine models 2..N (None: class_balance);
                                        # members that differ in their prior, not only in their seed
    holdout: float | None = 0.2
    folds: int | None = None
    fold: int = 0
    seed: int = 0                       # draws the split (hold-out or folds) and, unless train_seed is set,
                                        # every draw of training
    train_seed: int | None = None       # draws of training only (head probe's held-out fifth, initial
                                        # weights, photo order, augmentation, the OOD and int8 reference
                                        # photos): on one split, other train_seeds measure the recipe's own
                                        # spread (bench/RESULTS.md session 36)
    tta: bool = False   # flip TTA: no measurable gain with flip-augmented models, twice the compute (bench/RESULTS.md session 8)
    channels_last: bool = True
    threads: int | None = None
    adaptive_threads: bool = True       # switch between 1 and N intra-op threads, whichever is faster
    cache_dir: str | None = None        # on-disk decoded-image cache ("" disables)
    positive: list[str] | None = None   # sub-classes of the positive side of a binary question
    binary_epochs: int = 0              # >0: also train a single-stage binary baseline
    augment: dict = field(default_factory=dict)   # overrides of AugmentConfig fields
    max_train_images: int | None = None  # subsample the training split (probes, search)
    fine_from: str | None = None        # re-use the fine model of this artefact (same data, split, taxonomy)
    eval_batch_size: int = 8            # small batches are faster on this CPU (bench/inference_speed.py sweep)
    ood_quantile: float = 0.99
    metadata: bool = True               # fit the metadata model (age, sex, body site; metadata.py) when the data has them
    metadata_alpha: float = 20.0        # its smoothing toward the class prior, in photos
    metadata_weight: float = 0.5        # exponent of its factors (1: Bayes' rule; <1 tempers: the photo already shows
                                        # some of what age and site say). HAM10000 split 0: see bench/RESULTS.md session 24
    int8_calibration_images: int = 0    # >0: store int8 activation ranges from this many training images
                                        # (opt-in int8 serving, quantize.py; costs accuracy, bench/RESULTS.md)

    def resolved(self) -> dict:
        d = asdict(self)
        d["taxonomy"] = None if isinstance(self.taxonomy, dict) else Path(str(self.taxonomy)).name
        d["data"] = None   # never store machine paths in the artefact
        d["out"] = None
        d["cache_dir"] = None
        d["fine_from"] = None if self.fine_from is None else Path(str(self.fine_from)).name
        d["augmentation"] = AugmentConfig.from_overrides(self.augment).to_dict()   # every field, defaults included
        return d


# Epochs scale with the training split: with 12 fine / 6 coarse epochs a 600-photo split gets 216 / 108
# optimisation steps instead of HAM10000's 1,800 / 900, and product fusion fell 5 points of macro F1
# below the flat model; 3x the epochs fixed that, mostly through the longer fine model. Larger splits
# lost by more epochs: 1,500 photos with 3x, and 1,200 photos with 1.5x (4-6 points of balanced
# accuracy; bench/RESULTS.md, sessions 12 and 13). So unset epochs keep the photos seen at what a
# REFERENCE_PHOTOS-photo split gets, in at most MAX_EPOCH_FACTOR x the epochs.
AUTO_EPOCHS = 12
REFERENCE_PHOTOS = 1200
MAX_EPOCH_FACTOR = 3
AUTO_EPOCHS_RULE = (f"{AUTO_EPOCHS}, up to {AUTO_EPOCHS * MAX_EPOCH_FACTOR} with fewer than "
                    f"{REFERENCE_PHOTOS:,} training photos")     # said by the CLI help and the portal form


def epochs_for(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(fine, coarse) epochs for a training split of ``n_train`` photos. Unset fine epochs: 12, raised
    on splits smaller than REFERENCE_PHOTOS to keep the photos seen, up to MAX_EPOCH_FACTOR x. Unset
    coarse epochs: half the fine model's (raised the same way when the fine epochs are unset)."""
    factor = min(MAX_EPOCH_FACTOR, max(1.0, REFERENCE_PHOTOS / max(1, n_train)))
    fine = cfg.epochs if cfg.epochs is not None else round(AUTO_EPOCHS * factor)
    if cfg.coarse_epochs is not None:
        coarse = cfg.coarse_epochs
    elif cfg.epochs is not None:
        coarse = max(1, round(cfg.epochs / 2))
    else:
        coarse = round(AUTO_EPOCHS / 2 * factor)
    return int(fine), int(coarse)


# ---------------------------------------------------------------------- helpers
def _emit(progress, **kw):
    if progress is not None:
        progress(kw)


def _check_stop(should_stop):
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training cancelled by request; no artefact was completed")


BALANCES = ("none", "weights", "sqrt_weights", "focal", "sampler", "logit_adjust")
SUBCLASS_BALANCES = ("subclass_weights", "subclass_sqrt_weights")   # coarse model only


def progressive_epochs(cfg: TrainConfig, epochs: int) -> int:
    """How many of ``epochs`` train at ``progressive_size`` (0: progressive resizing is off)."""
    return 0 if cfg.progressive_size is None else budget.progressive_split(epochs, cfg.progressive_share)


def check_progressive(cfg: TrainConfig) -> None:
    """Refuse progressive-resizing settings that cannot work, before any training."""
    if cfg.progressive_size is None:
        return
    if not isinstance(cfg.progressive_size, int) or cfg.progressive_size < 32:
        raise ValueError(f"progressive_size must be a whole number of pixels of at least 32, not "
                         f"{cfg.progressive_size!r}")
    if cfg.image_size is not None and cfg.progressive_size >= cfg.image_size:
        raise ValueError(f"progressive_size {cfg.progressive_size} must be smaller than image_size {cfg.image_size}")
    if not 0 < cfg.progressive_share < 1:
        raise ValueError(f"progressive_share must be a share between 0 and 1 (exclusive), not "
                         f"{cfg.progressive_share!r}")


def check_layer_decay(cfg: TrainConfig) -> None:
    """Refuse layer-wise learning rates and stochastic depth that cannot work, before any training."""
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"layer_decay must be above 0 and at most 1 (1: one learning rate), not {cfg.layer_decay!r}")
    check_drop_path(cfg.drop_path)


def check_class_balance(cfg: TrainConfig) -> None:
    """Refuse unknown class-balance (or head-initialisation) settings before any training (they used to
    train unweighted)."""
    for name, val, allowed in (("class_balance", cfg.class_balance, BALANCES), ("head_init", cfg.head_init, HEAD_INITS),
                               ("member_class_balance", cfg.member_class_balance, (None, *BALANCES)),
                               ("coarse_class_balance", cfg.coarse_class_balance,
                                (None, *BALANCES, *SUBCLASS_BALANCES))):
        if val not in allowed:
            choices = ", ".join(a for a in allowed if a is not None)
            raise ValueError(f"{name} {val!r} is unknown; choose one of {choices}")
    if not 0 <= cfg.reweight_from < 1:
        raise ValueError(f"reweight_from must be a share of the epochs from 0 (weighted throughout) to below 1, "
                         f"not {cfg.reweight_from!r}")


def class_weights(y: np.ndarray, C: int, mode: str) -> torch.Tensor | None:
    counts = np.bincount(y, minlength=C).astype(np.float64)
    present = counts > 0
    w = np.zeros(C)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    if mode in ("weights", "focal"):
        pass
    elif mode == "sqrt_weights":
        w = np.sqrt(w)
    else:
        return None
    w[present] /= (w[present] * counts[present]).sum() / counts[present].sum()  # mean weight 1 per sample
    return torch.tensor(w, dtype=torch.float32)


def logit_offsets(y: np.ndarray, C: int, tau: float) -> torch.Tensor:
    """tau * log(prior) of the training labels, one per class, for the logit-adjusted loss. A class
    with no training photo counts as one photo (a finite offset; it has no photo to learn from)."""
    counts = np.maximum(np.bincount(y, minlength=C), 1).astype(np.float64)
    return torch.tensor(tau * np.log(counts / counts.sum()), dtype=torch.float32)


def loss_fn(logits, y, photo_w, mode, gamma, smoothing, offsets=None):
    """Training loss of a batch; ``photo_w``: the weight of every photo of the batch (its class's or
    its sub-class's, ``class_weights``) or None; ``offsets``: added to the logits before the loss
    ("logit_adjust", ``logit_offsets``)."""
    if offsets is not None:
        logits = logits.float() + offsets
    if mode == "focal":
        logp = F.log_softmax(logits.float(), 1)
        lp = logp.gather(1, y[:, None]).squeeze(1)
        p = lp.exp()
        a = photo_w if photo_w is not None else 1.0
        return (-a * (1 - p) ** gamma * lp).mean()
    if photo_w is not None:
        # per photo: F.cross_entropy(weight=, label_smoothing=) would weight the smoothing term of
        # every photo by the weights of *all* classes, so with inverse-frequency weights it pulls
        # each photo towards the rare classes (HAM10000, smoothing 0.1 with full weights: coarse
        # accuracy 0.165). Equal to F.cross_entropy(weight=) without smoothing.
        return weighted_loss(logits, y, photo_w, smoothing)
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)


def mixed_loss(logits, y, photo_w, mix, loss):
    """``loss(logits, y, photo_w)`` of a batch mixed by ``data.BatchMixer`` (``mix`` = (perm, lam), or
    None for a batch left alone): lam * loss against each photo's own label + (1 - lam) * loss
    against the label of the photo mixed into it, each with that photo's weight."""
    own = loss(logits, y, photo_w)
    if mix is None:
        return own
    perm, lam = mix
    other = loss(logits, y[perm], None if photo_w is None else photo_w[perm])
    return lam * own + (1 - lam) * other


def weighted_loss(logits, y, sample_w, smoothing):
    """Cross-entropy with a weight per photo, normalised like ``F.cross_entropy(weight=)``:
    sum(w_n * loss_n) / sum(w_n)."""
    per = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=smoothing)
    return (per * sample_w).sum() / sample_w.sum()


def lr_at(step, total, cfg: TrainConfig):
    cos = cfg.lrf + (1 - cfg.lrf) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    lr = cfg.lr0 * cos
    burn = min(int(cfg.burn_in), max(1, total // 5))   # warm-up never longer than 20 % of training
    if cfg.burn_in and step < burn:
        lr *= ((step + 1) / burn) ** cfg.burn_in_power
    return lr


HEAD_INITS = ("random", "probe")
PROBE_CS = (1.0, 0.1, 0.01, 0.001)     # inverse L2 strengths the probe chooses from (scikit-learn's C)


def fit_linear(feats: torch.Tensor, y: torch.Tensor, n_classes: int, strength: float,
               photo_w: torch.Tensor | None = None, offsets: torch.Tensor | None = None,
               max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on fixed ``feats`` (N, F) into ``n_classes`` classes: the mean
    photo-weighted cross-entropy plus an L2 penalty of 1 / (2 N ``strength``) on the weights, which is
    what scikit-learn's LogisticRegression minimises at ``C = strength`` (unweighted). Full-batch
    L-BFGS from zero; ``offsets`` (logit adjustment) are added to the logits as in the stage's loss.
    Returns (weight (C, F), bias (C,))."""
    feats = feats.float()
    n = len(y)
    w = torch.ones(n) if photo_w is None else photo_w.float()
    W = torch.zeros(n_classes, feats.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    shift = 0.0 if offsets is None else offsets

    def closure():
        opt.zero_grad()
        loss = weighted_loss(feats @ W.T + b + shift, y, w, 0.0) + W.pow(2).sum() / (2 * n * strength)
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def probe_head(fc: torch.nn.Linear, feats: torch.Tensor, y: torch.Tensor, photo_w: torch.Tensor | None = None,
               offsets: torch.Tensor | None = None, strengths=PROBE_CS, seed: int = 0) -> dict:
    """Fit ``fc`` as a linear probe on ``feats``. With several ``strengths`` the one whose fit on a
    random four fifths of the photos has the lowest photo-weighted cross-entropy on the other fifth
    is refitted on all of them (a probe with too little L2 separates a few thousand photos in
    1,280 dimensions and starts fine-tuning from overconfident logits). Returns the chosen strength,
    the validation losses and the training loss and accuracy of the fitted head."""
    feats, n = feats.float(), len(y)
    w = torch.ones(n) if photo_w is None else photo_w.float()
    shift = 0.0 if offsets is None else offsets
    val_losses = {}
    if len(strengths) > 1:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        va, fi = perm[: max(1, n // 5)], perm[max(1, n // 5):]
        for c in strengths:
            W, b = fit_linear(feats[fi], y[fi], fc.out_features, c, w[fi], offsets)
            val_losses[c] = float(weighted_loss(feats[va] @ W.T + b + shift, y[va], w[va], 0.0))
        best = min(val_losses, key=val_losses.get)
    else:
        best = strengths[0]
    W, b = fit_linear(feats, y, fc.out_features, best, w, offsets)
    with torch.no_grad():
        fc.weight.copy_(W)
        fc.bias.copy_(b)
        logits = feats @ W.T + b
    return {"C": best, "validation_loss": {str(k): v for k, v in val_losses.items()},
            "loss": float(weighted_loss(logits + shift, y, w, 0.0)),
            "train_accuracy": float((logits.argmax(1) == y).float().mean())}


def train_mode(model, frozen_mods=()) -> None:
    """Train mode as fine-tuning runs: BatchNorm on batch statistics, except the frozen modules."""
    model.train()
    for m in frozen_mods:
        m.eval()


def network_input(x: torch.Tensor, size: int | None, channels_last: bool) -> torch.Tensor:
    """An augmented batch as the network takes it: resized to ``size`` (progressive resizing; None
    keeps it) and in channels_last memory where the run uses it."""
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def training_features(model, images: torch.Tensor, idx: np.ndarray, make_input, batch_size: int,
                      frozen_mods=()) -> torch.Tensor:
    """Pooled features of ``images[idx]`` as the head meets them in fine-tuning: augmented by
    ``make_input`` (uint8 batch -> network input) and in train mode (BatchNorm on batch statistics)
    except ``frozen_mods``, kept in eval mode as ``fit`` keeps them. Running statistics and every
    module's mode are left as they were."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    was = {m: m.training for m in model.modules()}
    train_mode(model, frozen_mods)
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            out.append(model.features(make_input(images[torch.as_tensor(idx[s:s + batch_size])])).float())
    model.load_state_dict(saved, strict=False)
    for m, t in was.items():
        m.train(t)
    return torch.cat(out)


def make_optimizer(cfg: TrainConfig, model):
    """AdamW or SGD; no weight decay on biases and norms. With ``layer_decay`` d < 1 a parameter at
    depth k of D (``layer_depth``) trains at lr * d ** (D - k): the head at the full rate, earlier
    blocks ever slower. Every group carries its ``lr_scale``; ``fit`` multiplies the schedule by it."""
    D = model.num_blocks + 1
    buckets: dict[tuple[bool, int], list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(model, n) if cfg.layer_decay < 1 else D
        buckets.setdefault((p.ndim <= 1, depth), []).append(p)
    groups = [{"params": ps, "weight_decay": 0.0 if no_wd else cfg.weight_decay,
               "lr_scale": cfg.layer_decay ** (D - depth)}
              for (no_wd, depth), ps in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr0)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def coarse_frozen(cfg: TrainConfig, coarse: Classifier, cut) -> list[str]:
    """Freeze and return the prefixes the coarse stage does not train: the part taken from the fine
    model when ``freeze_transferred``; the stem and first blocks, as in the fine model, when nothing
    is transferred; else nothing."""
    if cut == "none":
        return freeze_first_blocks(coarse, cfg.freeze_blocks)
    frozen = transferred_prefixes(coarse, cut) if cfg.freeze_transferred else []
    freeze_prefixes(coarse, frozen)
    return frozen


def build_model(cfg: TrainConfig, num_classes: int) -> Classifier:
    m = Classifier(cfg.backbone, num_classes, drop_path_rate=cfg.drop_path)
    from .weights import has_imagenet, load_imagenet
    if cfg.pretrained and has_imagenet(cfg.backbone):
        load_imagenet(m)
    return m


def preprocessing_for(cfg: TrainConfig) -> dict:
    from .weights import IMAGENET_MEAN, IMAGENET_STD
    return {"size": cfg.image_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "resize": "shorter_side_then_centre_crop", "interpolation": "bicubic",
            "colour_constancy": cfg.colour_constancy}


def _save_ckpt(path: Path, **obj):
    art.write_atomic(path, lambda f: torch.save(obj, f))


def eta_seconds(batches_low: int, batches_full: int, batch_size: int, speed: float, pixel_ratio: float = 1.0) -> float:
    """Seconds left of a stage: ``batches_low`` batches still at the progressive (low) resolution and
    ``batches_full`` at the full one, at ``speed`` images/s measured at the current resolution. While
    that is the low one (``pixel_ratio`` = low px^2 / full px^2 < 1), the full-size batches are
    estimated ``1 / pixel_ratio`` times slower, as the convolutions' work grows with the pixels
    (session 21: 59.6 img/s at 160 px, 28.6 at 224 px; the pixel ratio predicts 30.4)."""
    return (batches_low + batches_full / pixel_ratio) * batch_size / max(speed, 1e-9)


class RecentSpeed:
    """Images per second over the last ``window`` batches (fewer at first). The ETA uses it rather
    than the average since the stage or resolution began, which lags a load that changes: in
    session 22 a test suite beside a run's first 4 epochs left the phase average saying 17 min
    where 11.9 were left."""

    def __init__(self, window: int, clock=time.time):
        self.clock = clock
        self.marks = deque(maxlen=max(1, window) + 1)    # (time, images counted so far)
        self.reset()

    def reset(self):
        """Start again (a new resolution: the old batches' speed says nothing about it)."""
        self.marks.clear()
        self.marks.append((self.clock(), 0))

    def add(self, images: int):
        self.marks.append((self.clock(), self.marks[-1][1] + images))

    def speed(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def fit(model: Classifier, images: torch.Tensor, y: np.ndarray, idx: np.ndarray, cfg: TrainConfig,
        stage: str, epochs: int, ckpt: Path | None, frozen: list[str], progress=None, should_stop=None,
        num_classes: int | None = None, groups: np.ndarray | None = None) -> dict:
    """Train ``model`` on ``images[idx]`` with labels ``y[idx]``; resumable via ``ckpt``.

    ``groups`` (the sub-class of every photo, for the coarse model): with ``class_balance``
    "subclass_weights" / "subclass_sqrt_weights" each photo is weighted by its group's (square-root)
    inverse frequency instead of its label's."""
    pre = preprocessing_for(cfg)
    C = num_classes or model.fc.out_features
    freeze_prefixes(model, frozen)
    frozen_mods = frozen_modules(model, frozen)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    yt = y[idx]
    sample_w, gw = None, None      # weight of every photo (indexed like y); sub-class weights
    if cfg.class_balance in SUBCLASS_BALANCES:
        if groups is None:
            raise ValueError(f"class balance {cfg.class_balance!r} needs the sub-class of every photo")
        G = int(groups.max()) + 1
        gw = class_weights(groups[idx], G, cfg.class_balance.removeprefix("subclass_")).numpy()
        sample_w = torch.tensor(gw[groups], dtype=torch.float32)     # indexed by photo, like y
        weights = None
    else:
        weights = class_weights(yt, C, cfg.class_balance)
        if weights is not None:     # None: "none", "sampler" (balances by drawing, not weighting), "logit_adjust"
            sample_w = weights[torch.as_tensor(y, dtype=torch.long)]
    offsets = logit_offsets(yt, C, cfg.logit_adjust_tau) if cfg.class_balance == "logit_adjust" else None
    bs = min(cfg.batch_size, len(idx))
    steps = max(1, len(idx) // bs)
    total = steps * epochs
    start_epoch, history = 0, []
    resuming = ckpt is not None and ckpt.is_file()
    probe = None
    if cfg.head_init == "probe" and not resuming:    # before the weight average starts from the model
        t_probe = time.time()
        _emit(progress, stage=stage, event="head_probe",
              message="fitting the new head as a linear probe on the training photos' features (LP-FT)")
        paug = Augmenter(AugmentConfig.from_overrides(cfg.augment), pre["mean"], pre["std"], seed=cfg.seed + 7)
        psize = cfg.progressive_size if progressive_epochs(cfg, epochs) else None

        def probe_input(xb, paug=paug, psize=psize):
            return network_input(paug(xb), psize, cfg.channels_last)

        feats = training_features(model, images, idx, probe_input, min(cfg.batch_size, len(idx)), frozen_mods)
        probe = probe_head(model.fc, feats, torch.as_tensor(yt, dtype=torch.long),
                           None if sample_w is None else sample_w[torch.as_tensor(idx)], offsets, seed=cfg.seed)
        probe["seconds"] = time.time() - t_probe
        _emit(progress, stage=stage, message=f"head probe: L2 strength C {probe['C']:g} of {len(PROBE_CS)} by "
              f"held-out loss, training accuracy {probe['train_accuracy']:.3f}, {probe['seconds']:.0f} s")
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if resuming:
        st = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        start_epoch = int(st["epoch"])
        history = json.loads(st.get("history", "[]"))
        _emit(progress, stage=stage, event="resumed", epoch=start_epoch, epochs=epochs)
    t_stage = time.time()
    seen = 0
    tuner = ThreadTuner(cfg.threads or os.cpu_count() or 1) if cfg.adaptive_threads else _NoTuner()
    low_epochs = progressive_epochs(cfg, epochs)
    weighted_from = round(cfg.reweight_from * epochs)    # epochs before it train unweighted (deferred re-weighting)
    phase, recent = None, RecentSpeed(steps)     # speed of the current resolution over its last epoch, for the ETA
    for epoch in range(start_epoch, epochs):
        if ema is not None and low_epochs and epoch == low_epochs:
            ema = WeightAverage(model, cfg.ema_decay)    # forget the low-resolution weights
        low = epoch < low_epochs
        size = cfg.progressive_size if low else None
        if low != phase:
            phase = low
            recent.reset()
        g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + zlib.crc32(stage.encode()) % 1000)
        if cfg.class_balance == "sampler":
            cw = class_weights(yt, C, "weights").numpy()
            order = torch.multinomial(torch.tensor(cw[yt], dtype=torch.float64), len(idx), True, generator=g).numpy()
        else:
            order = torch.randperm(len(idx), generator=g).numpy()
        acfg = AugmentConfig.from_overrides(cfg.augment)
        aug = Augmenter(acfg, pre["mean"], pre["std"], seed=int(g.initial_seed() % (2**31)))
        mixer = BatchMixer(acfg, seed=int(g.initial_seed() % (2**31)) + 1)
        train_mode(model, frozen_mods)
        run_loss, t_ep = 0.0, time.time()

        def make_batch(b, order=order, aug=aug, mixer=mixer, size=size):
            bi = idx[order[b * bs:(b + 1) * bs]]
            x, mix = mixer(aug(images[torch.as_tensor(bi)]))
            return bi, network_input(x, size, cfg.channels_last), mix
        # augment the next batch in a helper thread while the model trains on this one
        fut = _POOL.submit(make_batch, 0)
        for b in range(steps):
            try:
                _check_stop(should_stop)
            except TrainingCancelled:
                fut.result()
                raise
            bi, x, mix = fut.result()
            if b + 1 < steps:
                fut = _POOL.submit(make_batch, b + 1)
            tuner.begin()
            target = torch.as_tensor(y[bi], dtype=torch.long)
            step = epoch * steps + b
            lr = lr_at(step, total, cfg)
            for grp in opt.param_groups:
                grp["lr"] = lr * grp.get("lr_scale", 1.0)
            photo_w = None if sample_w is None or epoch < weighted_from else sample_w[torch.as_tensor(bi)]
            loss = mixed_loss(model(x), target, photo_w, mix,
                              lambda lg, t, w: loss_fn(lg, t, w, cfg.class_balance, cfg.focal_gamma,
                                                       cfg.label_smoothing, offsets))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            tuner.end(len(bi))
            run_loss += float(loss.detach())
            seen += len(bi)
            recent.add(len(bi))
            el = time.time() - t_stage
            ips = seen / max(el, 1e-9)
            left = (epochs - epoch - 1) * steps + (steps - b - 1)
            left_low = (low_epochs - epoch - 1) * steps + (steps - b - 1) if low else 0
            remaining = eta_seconds(left_low, left - left_low, bs, recent.speed(),
                                    (cfg.progressive_size / cfg.image_size) ** 2 if low else 1.0)
            _emit(progress, stage=stage, epoch=epoch + 1, epochs=epochs, batch=b + 1, batches=steps,
                  loss=run_loss / (b + 1), lr=lr, eta_seconds=remaining, images_per_second=ips,
                  elapsed_seconds=el, threads=tuner.threads)
        history.append({"epoch": epoch + 1, "loss": run_loss / steps, "seconds": time.time() - t_ep,
                        "threads": tuner.threads})
        if ckpt is not None:
            extra = {} if ema is None else {"ema": ema.state_dict()}
            _save_ckpt(ckpt, model=model.state_dict(), optimizer=opt.state_dict(), epoch=epoch + 1,
                       history=json.dumps(history), **extra)
        _emit(progress, stage=stage, event="epoch_end", epoch=epoch + 1, epochs=epochs,
              loss=run_loss / steps, seconds=time.time() - t_ep)
    if ema is not None:
        ema.copy_to(model)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    el = time.time() - t_stage
    return {"history": history, "seconds": el, "images_per_second": seen / el if seen else None,
            "frozen": frozen, "class_weights": None if weights is None else weights.tolist(),
            **({} if probe is None else {"head_probe": probe}),
            **({"progressive": {"size": cfg.progressive_size, "epochs": low_epochs}} if low_epochs else {}),
            **({} if offsets is None else {"logit_offsets": offsets.tolist()}),
            **({} if gw is None else {"subclass_weights": gw.tolist()})}


def member_config(cfg: TrainConfig, k: int) -> TrainConfig:
    """Settings of fine model k: member 0 is the run's own; members 1.. get their own seed (head
    init, batch order, augmentation) and, with member_class_balance, their own class balance."""
    if k == 0:
        return cfg
    balance = cfg.member_class_balance or cfg.class_balance
    return replace(cfg, seed=cfg.seed + 1000 * k, class_balance=balance)


def _member_progress(progress, k: int, n: int):
    """Progress of fine model k of n: adds member/members and extends the ETA over the members left,
    each as long as this one's time so far plus its ETA (so a progressive plan's slower full-size
    epochs and a changing load count as they do for this member; after a resume this member's time
    counts from the resume)."""
    if progress is None or n == 1:
        return progress

    def wrapped(d):
        d = {**d, "member": k + 1, "members": n}
        if d.get("eta_seconds") is not None and d.get("elapsed_seconds") is not None:
            d["eta_seconds"] += (n - 1 - k) * (d["elapsed_seconds"] + d["eta_seconds"])
        progress(d)
    return wrapped


# ---------------------------------------------------------------------- pipeline
def prepare_data(cfg: TrainConfig, taxonomy: Taxonomy, progress=None, should_stop=None):
    """Read, filter, fingerprint, split and cache. Returns a dict used by train/evaluate."""
    records, info = read_dataset(cfg.data)
    records, skipped = filter_to_taxonomy(records, taxonomy)
    if not records:
        raise ValueError(f"no image of {cfg.data} has a label of the taxonomy (skipped: {skipped})")
    fp = data_fingerprint(records)
    cache_dir = cfg.cache_dir
    if cache_dir is None:
        cache_dir = os.environ.get("DERM_ML_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "derm_portal_ml")
    t0 = time.time()
    images, ok, bad = build_cache(records, cfg.image_size, cache_dir or None, fp,
                                  progress=lambda d, n: _emit(progress, stage="cache", batch=d, batches=n),
                                  should_stop=should_stop, colour=cfg.colour_constancy)
    cache_s = time.time() - t0
    keep = np.flatnonzero(ok)
    records = [records[i] for i in keep]
    images = images[torch.as_tensor(keep)] if len(keep) != len(ok) else images
    sub_idx = {s: i for i, s in enumerate(taxonomy.sub_classes)}
    y_sub = np.array([sub_idx[r.label] for r in records], dtype=np.int64)
    y_meta = taxonomy.parent_index[y_sub]
    return {"records": records, "images": images, "y_sub": y_sub, "y_meta": y_meta, "fingerprint": fp,
            "skipped_labels": skipped, "bad_images": bad, "format": info["format"], "cache_seconds": cache_s}


def make_split(cfg: TrainConfig, records):
    if cfg.folds:
        tr, te = kfold_split(records, cfg.folds, cfg.fold, cfg.seed)
        kind = {"kind": "kfold", "folds": cfg.folds, "fold": cfg.fold}
    elif cfg.holdout:
        tr, te = holdout_split(records, cfg.holdout, cfg.seed)
        kind = {"kind": "holdout", "fraction": cfg.holdout}
    else:
        tr, te = np.arange(len(records)), np.zeros(0, dtype=np.int64)
        kind = {"kind": "none"}
    return tr, te, kind


def _subsample(idx, y, n, seed):
    if n is None or n >= len(idx):
        return idx
    from sklearn.model_selection import train_test_split
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=y[idx], random_state=seed)
    except ValueError:
        keep = np.random.default_rng(seed).choice(idx, n, replace=False)
    return np.sort(keep)


def resolve_image_size(cfg: TrainConfig, tax: Taxonomy, work: Path, progress=None) -> dict:
    """The image size of a run whose ``image_size`` is unset (budget.choose_image_size), with how it
    was chosen. Kept in ``work`` so that a resumed run keeps it; a run with ``fine_from`` takes the
    size of the reused fine model."""
    kept = work / "image_size.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    if cfg.fine_from:
        size = int(art.read_manifest(cfg.fine_from)["preprocessing"]["size"])
        choice = budget.size_choice(size, f"{size} px, as the reused fine model", **{"from": "fine_from"})
    else:
        _emit(progress, stage="image_size", event="probe", sizes=list(budget.AUTO_SIZES),
              message=f"timing a few training steps at {budget.AUTO_SIZES[0]} px to choose the image size")
        records, _ = read_dataset(cfg.data)
        records, _ = filter_to_taxonomy(records, tax)
        tr, _, _ = make_split(cfg, records)
        n_train = len(tr) if cfg.max_train_images is None else min(len(tr), cfg.max_train_images)
        fine_epochs, coarse_epochs = epochs_for(cfg, n_train)

        def make_fine(size):     # the network does not depend on the size; the probe feeds it
            m = build_model(cfg, len(tax.sub_classes))
            freeze_first_blocks(m, cfg.freeze_blocks)
            return m

        def make_coarse(size):
            m = build_model(cfg, len(tax.meta_classes))
            coarse_frozen(cfg, m, parse_cut(cfg.transfer_cut, m))
            return m

        # the probe's networks and random photos must not move the run's draws: a run whose size the probe
        # chose trains the model the same run with that size set trains (how many probes run depends on the CPU)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            size, choice = choose_image_size(make_fine, make_coarse, max(1, n_train), fine_epochs, coarse_epochs,
                                             max(1, int(cfg.fine_models)), cfg.batch_size,
                                             cfg.image_budget_minutes, cfg.channels_last,
                                             progressive_share=cfg.progressive_share if cfg.progressive_size is None else None,
                                             probe_epochs=budget.PROBE_EPOCHS if cfg.head_init == "probe" else 0.0)
        random.setstate(py_state)
        np.random.set_state(np_state)
        choice["n_train"] = n_train
    _emit(progress, stage="image_size", event="chosen", **choice)
    art.write_json(kept, choice)
    return choice


def train(config: TrainConfig, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Path:
    cfg = config
    out = Path(cfg.out)
    if (out / art.MANIFEST).is_file():
        _emit(progress, stage="done", event="already_complete")
        return out
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    keep_freed_memory()
    train_seed = cfg.seed if cfg.train_seed is None else cfg.train_seed
    random.seed(train_seed); np.random.seed(train_seed); torch.manual_seed(train_seed)
    tax = Taxonomy.from_dict(cfg.taxonomy) if isinstance(cfg.taxonomy, dict) else Taxonomy.from_json(cfg.taxonomy)
    check_colour_constancy(cfg.colour_constancy)
    check_class_balance(cfg)
    check_layer_decay(cfg)
    check_progressive(cfg)
    if cfg.positive:
        unknown = [p for p in cfg.positive if p not in tax]
        if unknown:
            raise ValueError(f"--positive names unknown sub-classes: {unknown}")
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    settings = cfg.resolved()
    settings_file = work / "settings.json"
    if settings_file.is_file():
        old = json.loads(settings_file.read_text())
        if old != json.loads(json.dumps(settings)):
            raise ValueError(f"{out} holds an unfinished run with different settings; "
                             "use another --out or delete its .work directory")
    else:
        art.write_json(settings_file, settings)
    timings = {}
    t_all = time.time()
    size_choice = None
    if cfg.image_size is None:
        size_choice = resolve_image_size(cfg, tax, work, progress)
        cfg = replace(cfg, image_size=size_choice["chosen"])
        if cfg.progressive_size is None and size_choice.get("progressive_size"):
            cfg = replace(cfg, progressive_size=size_choice["progressive_size"])
        check_progressive(cfg)
    D = prepare_data(cfg, tax, progress, should_stop)
    timings["cache"] = D["cache_seconds"]
    records, images, y_sub, y_meta = D["records"], D["images"], D["y_sub"], D["y_meta"]
    tr, te, split_kind = make_split(cfg, records)
    tr = _subsample(tr, y_sub, cfg.max_train_images, cfg.seed)
    split_seed, cfg = cfg.seed, replace(cfg, seed=train_seed)   # from here on cfg.seed is training's
    pre = preprocessing_for(cfg)

    fine_epochs, coarse_epochs = epochs_for(cfg, len(tr))

    # 1. fine model(s): member 0 as always; members 1.. get their own seed (head, order, augmentation)
    n_members = max(1, int(cfg.fine_models))
    fines, fine_infos = [], []
    reused = 0
    if cfg.fine_from:
        src = art.read_manifest(cfg.fine_from)
        src_tax = Taxonomy.from_json(Path(cfg.fine_from) / "taxonomy.json")
        if (src["data"]["fingerprint"] != D["fingerprint"] or src_tax.sub_classes != tax.sub_classes
                or src["backbone"] != cfg.backbone or src["preprocessing"]["size"] != cfg.image_size
                or src["preprocessing"].get("colour_constancy", "none") != cfg.colour_constancy):
            raise ValueError("fine_from: the artefact was trained on other data, taxonomy, backbone, size "
                             "or colour constancy")
        tr_src, te_src = split_by_cases(records, set(src["split"]["test_cases"]))
        if not np.array_equal(te_src, te):
            raise ValueError("fine_from: the artefact's held-out split differs from this run's split")
        reused = min(n_members, int(src.get("fine_members", 1)))
        src_infos = src.get("fine_members_training") or [src["fine_training"]]
        for k in range(reused):
            had = src_infos[k].get("class_balance")
            if had is not None and had != member_config(cfg, k).class_balance:
                raise ValueError(f"fine_from: fine model {k + 1} of the artefact was trained with class balance "
                                 f"{had!r}, this run asks for {member_config(cfg, k).class_balance!r}")
            m = build_model(cfg, len(tax.sub_classes))
            m.load_state_dict(art.load_state(Path(cfg.fine_from) / art.fine_file(k)))
            m.eval()
            fines.append(m)
            fine_infos.append({**src_infos[k], "reused_from_artefact_created": src.get("created")})
        timings["fine_reused_seconds"] = sum(i.get("seconds", 0.0) for i in src_infos[:reused])
    coarse_rng = None
    for k in range(reused, n_members):
        mcfg = member_config(cfg, k)
        if k > 0:
            torch.manual_seed(mcfg.seed)
        m = build_model(cfg, len(tax.sub_classes))
        frozen_fine = freeze_first_blocks(m, cfg.freeze_blocks)
        info = fit(m, images, y_sub, tr, mcfg, "fine", fine_epochs,
                   work / (Path(art.fine_file(k)).stem + ".ckpt"), frozen_fine,
                   _member_progress(progress, k, n_members), should_stop)
        info["seed"] = mcfg.seed
        info["class_balance"] = mcfg.class_balance
        fines.append(m)
        fine_infos.append(info)
        if k == 0:
            coarse_rng = torch.get_rng_state()   # the coarse model starts as in a one-model run
    if coarse_rng is not None:
        torch.set_rng_state(coarse_rng)
    timings["fine"] = sum(i["seconds"] for i in fine_infos[reused:])
    timings["fine_members"] = [i.get("seconds") for i in fine_infos]
    fine = fines[0]
    fine_info = fine_infos[0]

    # 2. transfer + 3. coarse model
    t0 = time.time()
    coarse = build_model(cfg, len(tax.meta_classes))
    cut = parse_cut(cfg.transfer_cut, coarse)
    copied = transfer_cut(coarse, fine, cut)
    frozen_c = coarse_frozen(cfg, coarse, cut)
    ccfg = replace(cfg, progressive_size=None, reweight_from=0.0)  # the coarse model: image_size, weighted throughout
    if cfg.coarse_class_balance is not None:
        ccfg = replace(ccfg, class_balance=cfg.coarse_class_balance)
    coarse_info = fit(coarse, images, y_meta, tr, ccfg, "coarse", coarse_epochs, work / "coarse.ckpt", frozen_c,
                      progress, should_stop, groups=y_sub)
    coarse_info["transferred_tensors"] = len(copied)
    coarse_info["cut"] = cut
    timings["coarse"] = time.time() - t0

    binary, binary_info = None, None
    if cfg.positive and cfg.binary_epochs > 0:
        t0 = time.time()
        binary = build_model(cfg, 2)
        yb = np.isin(np.array(tax.sub_classes)[y_sub], cfg.positive).astype(np.int64)
        fb = freeze_first_blocks(binary, cfg.freeze_blocks)
        binary_info = fit(binary, images, yb, tr, cfg, "binary", cfg.binary_epochs, work / "binary.ckpt", fb,
                          progress, should_stop)
        timings["binary"] = time.time() - t0
    _check_stop(should_stop)

    # 4. evaluation on the held-out split + OOD statistics from training features
    t0 = time.time()
    _emit(progress, stage="evaluate", event="start")
    from .evaluate import report_from_probs
    ood_idx = _subsample(tr, y_sub, 2000, cfg.seed)
    _, ftr = model_outputs(fine, images[torch.as_tensor(ood_idx)], pre["mean"], pre["std"],
                           cfg.eval_batch_size, tta=False, want_features=True)
    ood_means, ood_thr = ood_fit(ftr, y_sub[ood_idx], len(tax.sub_classes), cfg.ood_quantile)
    calib = None
    if cfg.int8_calibration_images > 0:   # activation ranges for int8 serving, from training images only
        from . import quantize
        tq = time.time()
        cal_idx = _subsample(tr, y_sub, cfg.int8_calibration_images, cfg.seed)
        calib = quantize.calibrate_models(fines, coarse, images[torch.as_tensor(cal_idx)], pre["mean"], pre["std"],
                                          cfg.image_size)
        timings["int8_calibration"] = time.time() - tq
    meta_models = None
    if cfg.metadata:     # age, sex, body site: counted on the training split only
        from .metadata import fit_levels
        meta_models = fit_levels([records[i].meta for i in tr], y_sub[tr], tax, cfg.metadata_alpha,
                                 cfg.metadata_weight)
    metrics = None
    t_inf = None
    if len(te):
        _check_stop(should_stop)
        ti = time.time()
        ximg = images[torch.as_tensor(te)]
        pf = np.mean([model_outputs(m, ximg, pre["mean"], pre["std"], cfg.eval_batch_size, cfg.tta)
                      for m in fines], axis=0)
        pc = model_outputs(coarse, ximg, pre["mean"], pre["std"], cfg.eval_batch_size, cfg.tta)
        pb = model_outputs(binary, ximg, pre["mean"], pre["std"], cfg.eval_batch_size, cfg.tta)[:, 1] if binary is not None else None
        t_inf = time.time() - ti
        metrics = report_from_probs(pf, pc, y_sub[te], tax, positive=cfg.positive, p_binary=pb)
        if meta_models is not None:
            from .evaluate import metadata_report
            metrics["with_metadata"] = metadata_report(pf, pc, y_sub[te], tax, *meta_models,
                                                       [records[i].meta for i in te])
        metrics["inference_images_per_second_fine_plus_coarse"] = len(te) / t_inf
    timings["evaluate"] = time.time() - t0
    timings["total"] = time.time() - t_all
    _check_stop(should_stop)

    # 5. write the artefact: files into .partial, move them, manifest last
    part = out / ".partial"
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    tax.to_json(part / "taxonomy.json")
    for k, m in enumerate(fines):
        art.save_state(m, part / art.fine_file(k))
    art.save_state(coarse, part / "coarse.safetensors")
    if binary is not None:
        art.save_state(binary, part / "binary.safetensors")
    from safetensors.torch import save_file
    save_file({"class_means": torch.from_numpy(ood_means)}, str(part / "ood.safetensors"))
    if calib is not None:
        save_file(calib, str(part / quantize.FILE))
    if meta_models is not None:
        from .metadata import FILE as METADATA_FILE
        art.write_json(part / METADATA_FILE, {"fine": meta_models[0].to_dict(), "coarse": meta_models[1].to_dict()})
    test_cases = sorted({records[i].case_id for i in te})
    manifest = {
        "format_version": art.FORMAT_VERSION,
        "backbone": cfg.backbone,
        "num_fine": len(tax.sub_classes), "num_coarse": len(tax.meta_classes),
        "fine_members": len(fines),
        "transfer_cut": cut,
        "preprocessing": pre,
        "tta": cfg.tta,
        "positive": cfg.positive,
        "has_binary": binary is not None,
        "training": {**settings, "image_size": cfg.image_size, "progressive_size": cfg.progressive_size, "image_size_choice": size_choice,
                     "epochs": fine_epochs, "coarse_epochs": coarse_epochs,
                     "epochs_set": {"fine": cfg.epochs is not None, "coarse": cfg.coarse_epochs is not None}},
        "seed": split_seed,
        "train_seed": train_seed,
        "data": {"fingerprint": D["fingerprint"], "format": D["format"], "n_images": len(records),
                 "n_train": int(len(tr)), "n_test": int(len(te)),
                 "skipped_labels": D["skipped_labels"], "bad_images": D["bad_images"],
                 "class_counts": {s: int((y_sub == i).sum()) for i, s in enumerate(tax.sub_classes)}},
        "split": {**split_kind, "seed": split_seed, "test_cases": test_cases},
        "int8_calibration": None if calib is None else {"file": quantize.FILE, "images": len(cal_idx),
                                                         "source": "training split"},
        "metadata": None if meta_models is None else {
            "file": "metadata.json", "fields": {k: len(v) for k, v in meta_models[0].tables.items()},
            "alpha": cfg.metadata_alpha, "weight": cfg.metadata_weight, "source": "training split"},
        "ood": {"method": "cosine distance of fine-model features to the nearest training class mean",
                "threshold": ood_thr, "quantile": cfg.ood_quantile},
        "timings_seconds": timings,
        "train_images_per_second": {"fine": fine_info["images_per_second"], "coarse": coarse_info["images_per_second"]},
        "fine_training": fine_info, "coarse_training": coarse_info, "binary_training": binary_info,
        "fine_members_training": fine_infos,
        "code_version": art.code_version(),
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    art.write_json(part / "metrics.json", metrics or {})
    for f in part.iterdir():
        os.replace(f, out / f.name)
    art.write_json(out / art.MANIFEST, manifest)   # marks the artefact complete
    shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    _emit(progress, stage="done", event="complete", seconds=timings["total"])
    return out
