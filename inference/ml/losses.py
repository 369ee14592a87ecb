"""Training losses and the class weights that counter class imbalance."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_weights(y: np.ndarray, C: int, mode: str) -> torch.Tensor | None:
    """Inverse-frequency ("weights", "focal") or square-root inverse-frequency ("sqrt_weights") weight
    of each of ``C`` classes, scaled to a mean weight of 1 per photo; None for the other modes."""
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
        # every photo by the weights of *all* classes, pulling each photo towards the rare classes
        # (HAM10000, smoothing 0.1 with full weights: coarse accuracy 0.165). Equal to
        # F.cross_entropy(weight=) without smoothing.
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
