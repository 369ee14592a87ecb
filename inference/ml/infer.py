"""Batched forward passes on uint8 image tensors (shared by training-time evaluation and Predictor)."""
from __future__ import annotations

import numpy as np
import torch

from .data import normalise


@torch.inference_mode()
def model_outputs(model, images_u8: torch.Tensor, mean, std, batch_size: int = 64, tta: bool = True,
                  want_features: bool = False, channels_last: bool = True):
    """Softmax probabilities (N, C) [and pooled features (N, F)] with optional flip averaging.

    TTA averages the softmax of the image and its horizontal flip (features of the original).
    """
    model.eval()
    probs, feats = [], []
    for s in range(0, len(images_u8), batch_size):
        x = normalise(images_u8[s:s + batch_size], mean, std)
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
        probs.append(p.numpy())
        if want_features:
            feats.append(f.float().numpy())
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
