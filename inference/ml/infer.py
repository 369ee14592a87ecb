"""Batched forward passes on uint8 image tensors (shared by training-time evaluation and Predictor)."""

from __future__ import annotations

import numpy as np
import torch

from .augment import normalise
from .device import model_device


@torch.inference_mode()
def model_outputs(
    model,
    images_u8: torch.Tensor,
    mean,
    std,
    batch_size: int = 64,
    tta: bool = True,
    want_features: bool = False,
    channels_last: bool = True,
    tuner: ThreadTuner | None = None,
):
    """Softmax probabilities (N, C) [and pooled features (N, F)] with optional flip averaging.

    TTA averages the softmax of the image and its horizontal flip (features of the original).
    """
    model.eval()
    probs, feats = [], []
    device = model_device(model)  # a model trained on a GPU evaluates there
    if tuner is None and len(images_u8) > 8 * batch_size and device.type == "cpu":
        tuner = ThreadTuner(period=10, trial=2)
    for s in range(0, len(images_u8), batch_size):
        if tuner is not None:
            tuner.begin()
        x = normalise(images_u8[s : s + batch_size].to(device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if tta:
            xx = torch.cat([x, x.flip(3)])
            logits, f = model.forward_with_features(xx)
            p = logits.float().softmax(1)
            n = len(x)
            p = (p[:n] + p[n:]) / 2
            f = f[:n]
        else:
            logits, f = model.forward_with_features(x)
            p = logits.float().softmax(1)
        if tuner is not None:
            tuner.end(len(x))
        probs.append(p.cpu().numpy())
        if want_features:
            feats.append(f.float().cpu().numpy())
    C = model.fc.out_features
    P = np.concatenate(probs) if probs else np.zeros((0, C), np.float32)
    if want_features:
        Fm = np.concatenate(feats) if feats else np.zeros((0, model.backbone.num_features), np.float32)
        return P, Fm
    return P


def ood_fit(features: np.ndarray, labels: np.ndarray, num_classes: int, quantile: float = 0.99):
    """Per-class means of L2-normalised features; threshold = quantile of training distances.

    The OOD score of an image is the cosine distance (1 - cos) of its feature vector to the
    nearest class mean; ``looks_unfamiliar`` when it exceeds the threshold (99th percentile of
    the training images' own scores).
    """
    f = features / np.clip(np.linalg.norm(features, axis=1, keepdims=True), 1e-12, None)
    means = np.zeros((num_classes, f.shape[1]), np.float32)
    for c in range(num_classes):
        m = labels == c
        if m.any():
            v = f[m].mean(0)
            means[c] = v / max(np.linalg.norm(v), 1e-12)
    scores = ood_scores(features, means)
    thr = float(np.quantile(scores, quantile)) if len(scores) else 1.0
    return means, thr


def ood_scores(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    f = features / np.clip(np.linalg.norm(features, axis=1, keepdims=True), 1e-12, None)
    valid = np.linalg.norm(means, axis=1) > 0
    sims = f @ means[valid].T
    return 1.0 - sims.max(axis=1)


class ThreadTuner:
    """Adaptive intra-op thread count for a CPU shared with other processes.

    On a 2-core machine that other jobs also use, 2 intra-op threads can be several times slower
    than 1 (threads wait at barriers for a descheduled sibling; measured 21 vs 93 img/s under a load
    average of 4). Every ``period`` steps this tries the other setting for ``trial`` steps and keeps
    whichever gave the shorter median step time.
    """

    def __init__(self, max_threads: int | None = None, period: int = 30, trial: int = 3):
        import os
        import time

        self._time = time.perf_counter
        mt = max_threads or torch.get_num_threads() or os.cpu_count() or 1
        self.options = sorted({1, mt})
        self.current = mt
        self.period, self.trial = period, trial
        self.samples: dict[int, list[float]] = {o: [] for o in self.options}
        self.step = 0
        self._t = None
        self._n = None

    def begin(self):
        n = self.current
        if len(self.options) > 1:
            k = self.step % self.period
            if k < self.trial and self.step >= self.trial:
                n = [o for o in self.options if o != self.current][0]
            if self.step < 2 * self.trial:  # initial exploration: both settings
                n = self.options[(self.step // self.trial) % 2]
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self._n = n
        self._t = self._time()

    def end(self, items: int = 1):
        dt = (self._time() - self._t) / max(items, 1)
        s = self.samples[self._n]
        s.append(dt)
        del s[: -self.trial]
        self.step += 1
        k = self.step % self.period
        if len(self.options) > 1 and (k == self.trial or self.step == 2 * self.trial):
            med = {o: float(np.median(v[1:] if len(v) > 1 else v)) for o, v in self.samples.items() if v}
            if len(med) == len(self.options):
                self.current = min(med, key=med.get)
        torch.set_num_threads(self.current) if k == self.trial else None

    @property
    def threads(self) -> int:
        return self.current
