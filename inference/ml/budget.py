"""The image size a training run can afford: the largest of ``AUTO_SIZES`` whose fine + coarse
training is estimated to fit in the time budget on this machine.

EfficientNet-Lite0 was pretrained at 224 px, and on the HAM10000 hold-out a 224 px hierarchy scored
higher than a 160 px one, at twice the training time (bench/RESULTS.md, `image-size-224`). That time fits
the hour on a CPU with native bfloat16 (about 30 min) but not on a 2-core AVX2 CPU (estimated at
106-126 min there with the coarse model trained whole; 160 px took 46 min, `image-size-probe`),
so an unset ``--image-size`` is chosen per machine: a few training steps at the larger size on
random photos give its speed, and the speed gives the minutes. Where the larger size does not fit,
progressive resizing may: the fine model's first 2/3 of epochs at the smallest size and the rest,
and the coarse model, at the larger one (HAM10000 splits 0 / 1 against 160 px throughout: product
macro F1 +0.035 / +0.021, balanced accuracy +0.025 / +0.004; bench/RESULTS.md `progressive-resizing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

AUTO_SIZES = (224, 160)  # largest first; the last one is used whatever the estimate
DEFAULT_BUDGET_MINUTES = 45.0  # the target is 60 min for fine + transfer + coarse; 15 left for
# a busier machine than at the probe, and the evaluation
DEFAULT_PROGRESSIVE_SHARE = 2 / 3  # share of the fine epochs at the smaller size in a progressive plan
AUTO_IMAGE_SIZE_RULE = (
    f"{AUTO_SIZES[0]} if this machine's training is estimated to fit {DEFAULT_BUDGET_MINUTES:g} min, "
    f"else {AUTO_SIZES[0]} with the first 2/3 of the fine epochs at {AUTO_SIZES[-1]} if that fits, "
    f"else {AUTO_SIZES[-1]}"
)  # said by the CLI help and the portal form
# A whole run can be slower than its training steps alone (augmentation in a helper thread, weight
# averaging, checkpoints): probe images/s over whole-run images/s was 1.13-1.16 on a CPU with native
# bfloat16 and 0.93-0.96 on an AVX2 CPU (bench/RESULTS.md `image-size-probe`); 1.25 errs on the safe side.
RUN_OVER_PROBE = 1.25


def step_speed(
    model: torch.nn.Module, size: int, batch_size: int, channels_last: bool = True, steps: int = 3, warmup: int = 3
) -> float:
    """Images per second of AdamW training steps on random ``size`` px photos (the model's
    frozen parameters, if any, already have requires_grad=False). The model is changed."""
    x = torch.randn(batch_size, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.fc.out_features, (batch_size,))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


# The linear probe that starts a stage's head (head_init "probe") passes the training photos forward
# once: 79 s of a 169-s fine epoch and 55 s of a 90-s coarse epoch at 224 px (HAM10000, `lp-ft-heads`).
PROBE_EPOCHS = 0.6


def estimate_minutes(
    n_train: int,
    fine_epochs: int,
    coarse_epochs: int,
    fine_models: int,
    fine_ips: float,
    coarse_ips: float,
    probe_epochs: float = 0.0,
) -> float:
    """Minutes of fine + coarse training from the probed images/s; ``probe_epochs``: the cost of each
    stage's head probe in epochs of that stage (0 without one)."""
    seconds = n_train * (
        fine_models * (fine_epochs + probe_epochs) / fine_ips + (coarse_epochs + probe_epochs) / coarse_ips
    )
    return seconds * RUN_OVER_PROBE / 60


def progressive_split(epochs: int, share: float) -> int:
    """How many of ``epochs`` a progressive run trains at the smaller size: ``share`` of them,
    at least one and at most all but one (0 when there are fewer than two)."""
    if epochs < 2:
        return 0
    return min(epochs - 1, max(1, round(epochs * share)))


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m >= 1 else "under 1 min"


def size_choice(chosen: int, reason: str, **fields) -> dict:
    """The record of a size choice: ``reason`` for the model page, ``message`` for the run's log."""
    return {"chosen": chosen, **fields, "reason": reason, "message": f"image size {reason}"}


def choose_image_size(
    make_fine: Callable[[int], torch.nn.Module],
    make_coarse: Callable[[int], torch.nn.Module],
    n_train: int,
    fine_epochs: int,
    coarse_epochs: int,
    fine_models: int,
    batch_size: int,
    budget_minutes: float = DEFAULT_BUDGET_MINUTES,
    channels_last: bool = True,
    sizes: tuple[int, ...] | None = None,
    progressive_share: float | None = DEFAULT_PROGRESSIVE_SHARE,
    probe_epochs: float = 0.0,
) -> tuple[int, dict]:
    """(size, record of the choice). ``make_fine(size)`` / ``make_coarse(size)`` build the models as
    the run will train them (frozen blocks set). Sizes are tried largest first, each throughout and
    then (unless ``progressive_share`` is None) progressively from the smallest size (the record's
    ``progressive_size``); the smallest is taken without a probe when nothing larger fits.
    ``probe_epochs``: see ``estimate_minutes``."""
    sizes = tuple(sizes or AUTO_SIZES)
    bs = max(1, min(batch_size, n_train))
    low = sizes[-1]
    low_epochs = progressive_split(fine_epochs, progressive_share) if progressive_share is not None else 0
    probes, low_ips = [], None
    for size in sizes[:-1]:
        fine_ips = step_speed(make_fine(size), size, bs, channels_last)
        coarse_ips = step_speed(make_coarse(size), size, bs, channels_last)
        minutes = estimate_minutes(n_train, fine_epochs, coarse_epochs, fine_models, fine_ips, coarse_ips, probe_epochs)
        probes.append(
            {
                "size": size,
                "fine_images_per_second": round(fine_ips, 1),
                "coarse_images_per_second": round(coarse_ips, 1),
                "estimated_minutes": round(minutes, 1),
            }
        )
        if minutes <= budget_minutes:
            return size, size_choice(
                size,
                f"{size} px: training estimated at {_minutes(minutes)} on this machine (budget {budget_minutes:g} min)",
                budget_minutes=budget_minutes,
                probes=probes,
                progressive_size=None,
            )
        if not low_epochs:
            continue
        if low_ips is None:
            low_ips = step_speed(make_fine(low), low, bs, channels_last)
        # the fine model's images/s over its whole schedule: low_epochs at the small size, the rest at size
        mixed_ips = fine_epochs / (low_epochs / low_ips + (fine_epochs - low_epochs) / fine_ips)
        minutes = estimate_minutes(
            n_train, fine_epochs, coarse_epochs, fine_models, mixed_ips, coarse_ips, probe_epochs
        )
        probes.append(
            {
                "size": size,
                "progressive_size": low,
                "progressive_epochs": low_epochs,
                "fine_images_per_second_at_progressive_size": round(low_ips, 1),
                "estimated_minutes": round(minutes, 1),
            }
        )
        if minutes <= budget_minutes:
            return size, size_choice(
                size,
                f"{size} px, the first {low_epochs} of {fine_epochs} fine epochs at {low} px: training "
                f"estimated at {_minutes(minutes)} on this machine ({size} px throughout would take about "
                f"{_minutes(probes[-2]['estimated_minutes'])}; budget {budget_minutes:g} min)",
                budget_minutes=budget_minutes,
                probes=probes,
                progressive_size=low,
            )
    tried = "; ".join(
        f"{p['size']} px{' from ' + str(p['progressive_size']) + ' px' if 'progressive_size' in p else ''} "
        f"would take about {_minutes(p['estimated_minutes'])}"
        for p in probes
    )
    return low, size_choice(
        low,
        f"{low} px: {tried} on this machine (budget {budget_minutes:g} min)",
        budget_minutes=budget_minutes,
        probes=probes,
        progressive_size=None,
    )
