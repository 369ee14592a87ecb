"""Linear probe of a new head on fixed features (the LP of LP-FT, Kumar et al., ICLR 2022).

Fitting the head before fine-tuning starts it from useful logits instead of random ones; ``fit``
does it on the training photos' features as fine-tuning meets them (``fit.training_features``).
"""

from __future__ import annotations

import torch

from .losses import weighted_loss

PROBE_CS = (1.0, 0.1, 0.01, 0.001)  # inverse L2 strengths the probe chooses from (scikit-learn's C)


def fit_linear(
    feats: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    strength: float,
    photo_w: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
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


def probe_head(
    fc: torch.nn.Linear,
    feats: torch.Tensor,
    y: torch.Tensor,
    photo_w: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    strengths=PROBE_CS,
    seed: int = 0,
) -> dict:
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
        va, fi = perm[: max(1, n // 5)], perm[max(1, n // 5) :]
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
    return {
        "C": best,
        "validation_loss": {str(k): v for k, v in val_losses.items()},
        "loss": float(weighted_loss(logits + shift, y, w, 0.0)),
        "train_accuracy": float((logits.argmax(1) == y).float().mean()),
    }
