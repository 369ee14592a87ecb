"""One training stage (fine, coarse or binary model): ``fit`` and what it is made of.

``fit`` trains a model on some of the photos for some epochs: the new head first fitted as a linear
probe, then fine-tuning with AdamW (or SGD) on a cosine schedule with warm-up, photo weights against
class imbalance, an exponential moving average of the weights kept and used at the end. The next
batch is augmented in a helper thread while the model trains on the current one. A checkpoint after
every epoch lets a run that was stopped resume where it was.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import artefact as art
from . import distributed
from .augment import AugmentConfig, Augmenter, BatchMixer
from .config import SUBCLASS_BALANCES, TrainConfig, preprocessing_for, progressive_epochs
from .device import autocast, grad_scaler, resolve_device
from .errors import TrainingCancelled
from .infer import ThreadTuner
from .linear_probe import PROBE_CS, probe_head
from .losses import class_weights, logit_offsets, loss_fn, mixed_loss
from .networks import Classifier, freeze_prefixes, frozen_modules, layer_depth
from .progress import RecentSpeed, check_stop, emit, eta_seconds


def _one_thread():
    # The augmenting thread must not start its own intra-op team: with 2 torch threads in the
    # training step plus 2 in the augmenter, 2 cores spin at barriers (measured 21 vs 34 img/s
    # at 192 px, bench/train_step_speed.py).
    torch.set_num_threads(1)


_POOL = ThreadPoolExecutor(1, thread_name_prefix="augment", initializer=_one_thread)


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


def lr_at(step, total, cfg: TrainConfig):
    """Learning rate of ``step`` of ``total``: cosine from lr0 to lr0 * lrf after a power-law warm-up."""
    cos = cfg.lrf + (1 - cfg.lrf) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    lr = cfg.lr0 * cos
    burn = min(int(cfg.burn_in), max(1, total // 5))  # warm-up never longer than 20 % of training
    if cfg.burn_in and step < burn:
        lr *= ((step + 1) / burn) ** cfg.burn_in_power
    return lr


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
    groups = [
        {"params": ps, "weight_decay": 0.0 if no_wd else cfg.weight_decay, "lr_scale": cfg.layer_decay ** (D - depth)}
        for (no_wd, depth), ps in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr0)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


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


def training_features(
    model, images: torch.Tensor, idx: np.ndarray, make_input, batch_size: int, frozen_mods=()
) -> torch.Tensor:
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
            out.append(model.features(make_input(images[torch.as_tensor(idx[s : s + batch_size])])).float().cpu())
    model.load_state_dict(saved, strict=False)
    for m, t in was.items():
        m.train(t)
    return torch.cat(out)


def photo_weights(cfg: TrainConfig, y: np.ndarray, idx: np.ndarray, C: int, groups: np.ndarray | None):
    """(weight of every photo indexed like ``y`` or None, class weights or None, sub-class weights or
    None) for ``cfg.class_balance``; the sub-class modes weight each photo by its group in ``groups``."""
    if cfg.class_balance in SUBCLASS_BALANCES:
        if groups is None:
            raise ValueError(f"class balance {cfg.class_balance!r} needs the sub-class of every photo")
        G = int(groups.max()) + 1
        gw = class_weights(groups[idx], G, cfg.class_balance.removeprefix("subclass_")).numpy()
        return torch.tensor(gw[groups], dtype=torch.float32), None, gw
    weights = class_weights(y[idx], C, cfg.class_balance)
    if weights is None:  # "none", "sampler" (balances by drawing, not weighting), "logit_adjust"
        return None, None, None
    return weights[torch.as_tensor(y, dtype=torch.long)], weights, None


@dataclass
class _Stage:
    """One stage's model, photos and settings, and the state its batches update."""

    model: Classifier
    opt: torch.optim.Optimizer
    cfg: TrainConfig
    name: str  # "fine", "coarse" or "binary": progress and batch-order seed
    images: torch.Tensor
    y: np.ndarray  # label of every photo
    idx: np.ndarray  # the photos trained on
    epochs: int
    C: int
    frozen_mods: list
    sample_w: torch.Tensor | None  # weight of every photo (indexed like y)
    offsets: torch.Tensor | None  # logit adjustment
    progress: Callable | None
    should_stop: Callable | None
    device: torch.device = torch.device("cpu")
    scaler: object = None  # float16 gradient scaler on CUDA
    net: torch.nn.Module | None = None  # what the steps call: the model, or its DistributedDataParallel
    ema: WeightAverage | None = None
    tuner: object = None
    recent: RecentSpeed | None = None  # speed at the current resolution, for the ETA
    started: float = 0.0
    seen: int = 0
    low_phase: bool | None = None
    bs: int = field(init=False)
    steps: int = field(init=False)
    low_epochs: int = field(init=False)  # epochs at progressive_size
    weighted_from: int = field(init=False)  # epochs before it train unweighted (deferred re-weighting)

    def __post_init__(self):
        self.bs = min(self.cfg.batch_size, len(self.idx))
        self.steps = max(1, len(self.idx) // self.bs)
        self.low_epochs = progressive_epochs(self.cfg, self.epochs)
        self.weighted_from = round(self.cfg.reweight_from * self.epochs)


def fit(
    model: Classifier,
    images: torch.Tensor,
    y: np.ndarray,
    idx: np.ndarray,
    cfg: TrainConfig,
    stage: str,
    epochs: int,
    ckpt: Path | None,
    frozen: list[str],
    progress=None,
    should_stop=None,
    num_classes: int | None = None,
    groups: np.ndarray | None = None,
) -> dict:
    """Train ``model`` on ``images[idx]`` with labels ``y[idx]``; resumable via ``ckpt``.

    ``groups`` (the sub-class of every photo, for the coarse model): with ``class_balance``
    "subclass_weights" / "subclass_sqrt_weights" each photo is weighted by its group's (square-root)
    inverse frequency instead of its label's."""
    C = num_classes or model.fc.out_features
    device = distributed.init(resolve_device(cfg.device))  # torchrun: this process's device
    model.to(device)  # the CPU: nothing moves
    freeze_prefixes(model, frozen)
    frozen_mods = frozen_modules(model, frozen)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    sample_w, weights, gw = photo_weights(cfg, y, idx, C, groups)
    offsets = logit_offsets(y[idx], C, cfg.logit_adjust_tau) if cfg.class_balance == "logit_adjust" else None
    offsets = None if offsets is None else offsets.to(device)
    S = _Stage(
        model,
        opt,
        cfg,
        stage,
        images,
        y,
        idx,
        epochs,
        C,
        frozen_mods,
        sample_w,
        offsets,
        progress,
        should_stop,
        device,
        grad_scaler(device),
    )
    resuming = ckpt is not None and ckpt.is_file()
    # before the average starts; with several processes rank 0 fits it and the wrap below broadcasts it
    probe = _head_probe(S) if cfg.head_init == "probe" and not resuming and distributed.is_main() else None
    S.net = distributed.wrap(model, device)
    S.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start_epoch, history = _resume(S, ckpt) if resuming else (0, [])
    S.started = time.time()
    S.tuner = (
        ThreadTuner(cfg.threads or os.cpu_count() or 1) if cfg.adaptive_threads and device.type == "cpu" else _NoTuner()
    )
    S.recent = RecentSpeed(S.steps)
    for epoch in range(start_epoch, epochs):
        t_ep = time.time()
        loss = _train_epoch(S, epoch) / S.steps
        history.append({"epoch": epoch + 1, "loss": loss, "seconds": time.time() - t_ep, "threads": S.tuner.threads})
        if ckpt is not None and distributed.is_main():
            extra = {} if S.ema is None else {"ema": S.ema.state_dict()}
            _save_ckpt(
                ckpt,
                model=model.state_dict(),
                optimizer=opt.state_dict(),
                epoch=epoch + 1,
                history=json.dumps(history),
                **extra,
            )
        emit(
            progress,
            stage=stage,
            event="epoch_end",
            epoch=epoch + 1,
            epochs=epochs,
            loss=loss,
            seconds=time.time() - t_ep,
        )
    if S.ema is not None:
        S.ema.copy_to(model)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    el = time.time() - S.started
    speed = S.seen * distributed.world_size() / el if S.seen else None  # every process's photos
    return {
        "history": history,
        "seconds": el,
        "images_per_second": speed,
        "frozen": frozen,
        "class_weights": None if weights is None else weights.tolist(),
        **({} if probe is None else {"head_probe": probe}),
        **({"progressive": {"size": cfg.progressive_size, "epochs": S.low_epochs}} if S.low_epochs else {}),
        **({} if offsets is None else {"logit_offsets": offsets.tolist()}),
        **({} if gw is None else {"subclass_weights": gw.tolist()}),
    }


def _save_ckpt(path: Path, **obj):
    art.write_atomic(path, lambda f: torch.save(obj, f))


def _head_probe(S: _Stage) -> dict:
    """Fit the new head as a linear probe on the training photos' features as fine-tuning meets them
    (augmented, at the first epoch's size, BatchNorm on batch statistics), with the stage's photo weights."""
    cfg, t_probe = S.cfg, time.time()
    emit(
        S.progress,
        stage=S.name,
        event="head_probe",
        message="fitting the new head as a linear probe on the training photos' features (LP-FT)",
    )
    pre = preprocessing_for(cfg)
    paug = Augmenter(AugmentConfig.from_overrides(cfg.augment), pre["mean"], pre["std"], seed=cfg.seed + 7)
    psize = cfg.progressive_size if S.low_epochs else None

    def probe_input(xb):
        return network_input(paug(xb), psize, cfg.channels_last).to(S.device, non_blocking=True)

    feats = training_features(S.model, S.images, S.idx, probe_input, S.bs, S.frozen_mods)
    probe = probe_head(
        S.model.fc,
        feats,
        torch.as_tensor(S.y[S.idx], dtype=torch.long),
        None if S.sample_w is None else S.sample_w[torch.as_tensor(S.idx)],
        None if S.offsets is None else S.offsets.cpu(),
        seed=cfg.seed,
    )
    probe["seconds"] = time.time() - t_probe
    emit(
        S.progress,
        stage=S.name,
        message=f"head probe: L2 strength C {probe['C']:g} of {len(PROBE_CS)} by "
        f"held-out loss, training accuracy {probe['train_accuracy']:.3f}, {probe['seconds']:.0f} s",
    )
    return probe


def _resume(S: _Stage, ckpt: Path) -> tuple[int, list]:
    """Load the last completed epoch's checkpoint; returns (epochs done, their history)."""
    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    S.model.load_state_dict(st["model"])
    S.opt.load_state_dict(st["optimizer"])
    if S.ema is not None:
        S.ema.load_state_dict(st["ema"])
    start_epoch = int(st["epoch"])
    emit(S.progress, stage=S.name, event="resumed", epoch=start_epoch, epochs=S.epochs)
    return start_epoch, json.loads(st.get("history", "[]"))


def _batch_maker(S: _Stage, epoch: int, size: int | None):
    """The epoch's photo order and augmentation, drawn from a generator of (seed, epoch, stage) so that
    a resumed run draws what an uninterrupted one does; returns make_batch(b) -> (photos, input, mix)."""
    cfg = S.cfg
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + zlib.crc32(S.name.encode()) % 1000)
    yt = S.y[S.idx]
    if cfg.class_balance == "sampler":
        cw = class_weights(yt, S.C, "weights").numpy()
        order = torch.multinomial(torch.tensor(cw[yt], dtype=torch.float64), len(S.idx), True, generator=g).numpy()
    else:
        order = torch.randperm(len(S.idx), generator=g).numpy()
    acfg = AugmentConfig.from_overrides(cfg.augment)
    pre = preprocessing_for(cfg)
    rank, world = distributed.rank(), distributed.world_size()
    aug = Augmenter(acfg, pre["mean"], pre["std"], seed=int(g.initial_seed() % (2**31)) + 7919 * rank)
    mixer = BatchMixer(acfg, seed=int(g.initial_seed() % (2**31)) + 1)  # one mixing draw for the global batch

    def make_batch(b):
        bi = S.idx[order[b * S.bs : (b + 1) * S.bs]]
        if world > 1:  # this process's share of the global batch
            bi = distributed.shard(bi, rank, world)
        x, mix = mixer(aug(S.images[torch.as_tensor(bi)]))
        return bi, network_input(x, size, cfg.channels_last).to(S.device, non_blocking=True), mix

    return make_batch


def _train_epoch(S: _Stage, epoch: int) -> float:
    """One epoch of optimisation steps; returns the sum of the batches' losses."""
    if S.ema is not None and S.low_epochs and epoch == S.low_epochs:
        S.ema = WeightAverage(S.model, S.cfg.ema_decay)  # forget the low-resolution weights
    low = epoch < S.low_epochs
    if low != S.low_phase:
        S.low_phase = low
        S.recent.reset()
    make_batch = _batch_maker(S, epoch, S.cfg.progressive_size if low else None)
    train_mode(S.model, S.frozen_mods)
    run_loss = 0.0
    fut = _POOL.submit(make_batch, 0)  # the next batch is augmented while the model trains on this one
    for b in range(S.steps):
        try:
            check_stop(S.should_stop)
        except TrainingCancelled:
            fut.result()
            raise
        bi, x, mix = fut.result()
        if b + 1 < S.steps:
            fut = _POOL.submit(make_batch, b + 1)
        loss, lr = _train_step(S, epoch * S.steps + b, bi, x, mix, weighted=epoch >= S.weighted_from)
        run_loss += loss
        _report_batch(S, epoch, b, run_loss, lr, low)
    return run_loss


def _train_step(S: _Stage, step: int, bi: np.ndarray, x: torch.Tensor, mix, weighted: bool) -> tuple[float, float]:
    """One optimisation step on photos ``bi``; returns (loss, learning rate)."""
    cfg = S.cfg
    S.tuner.begin()
    target = torch.as_tensor(S.y[bi], dtype=torch.long).to(S.device)
    lr = lr_at(step, S.steps * S.epochs, cfg)
    for grp in S.opt.param_groups:
        grp["lr"] = lr * grp.get("lr_scale", 1.0)
    photo_w = None if S.sample_w is None or not weighted else S.sample_w[torch.as_tensor(bi)].to(S.device)
    if mix is not None:
        mix = (mix[0].to(S.device), mix[1])
    with autocast(S.device):  # float16 on CUDA; the CPU computes as before
        logits = S.net(x)
    loss = mixed_loss(
        logits.float(),
        target,
        photo_w,
        mix,
        lambda lg, t, w: loss_fn(lg, t, w, cfg.class_balance, cfg.focal_gamma, cfg.label_smoothing, S.offsets),
    )
    S.opt.zero_grad(set_to_none=True)
    if S.scaler is not None:
        S.scaler.scale(loss).backward()
        S.scaler.step(S.opt)
        S.scaler.update()
    else:
        loss.backward()
        S.opt.step()
    if S.ema is not None:
        S.ema.update(S.model)
    S.tuner.end(len(bi))
    S.seen += len(bi)
    S.recent.add(len(bi))
    return float(loss.detach()), lr


def _report_batch(S: _Stage, epoch: int, b: int, run_loss: float, lr: float, low: bool) -> None:
    """Progress after batch ``b`` of ``epoch``, with the stage's remaining time."""
    cfg = S.cfg
    el = time.time() - S.started
    left = (S.epochs - epoch - 1) * S.steps + (S.steps - b - 1)
    left_low = (S.low_epochs - epoch - 1) * S.steps + (S.steps - b - 1) if low else 0
    remaining = eta_seconds(
        left_low, left - left_low, S.bs, S.recent.speed(), (cfg.progressive_size / cfg.image_size) ** 2 if low else 1.0
    )
    emit(
        S.progress,
        stage=S.name,
        epoch=epoch + 1,
        epochs=S.epochs,
        batch=b + 1,
        batches=S.steps,
        loss=run_loss / (b + 1),
        lr=lr,
        eta_seconds=remaining,
        images_per_second=S.seen / max(el, 1e-9),
        elapsed_seconds=el,
        threads=S.tuner.threads,
    )
