"""Batch augmentation of uint8 photo batches: colour, another camera's light and optics, flips, affine
transforms and centre-sparing Cutout (``Augmenter`` with ``AugmentConfig``), CutMix / mixup of a batch
(``BatchMixer``), and ``normalise`` (uint8 -> the network's normalised floats)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class AugmentConfig:
    hsv_h: float = 0.0138  # hue shift, fraction of the colour circle
    hsv_s: float = 0.678  # saturation gain range
    hsv_v: float = 0.36  # value gain range
    channel_gain: float = 0.0  # per-channel gains 1 +- this (a white-balance / light colour change; 0 = off)
    gamma: float = 0.0  # gamma between 1/(1+g) and 1+g (another camera's tone curve; 0 = off)
    blur: float = 1.0  # Gaussian blur, sd 0..this many pixels (defocus, a softer lens; 0 = off)
    noise: float = 0.03  # Gaussian noise, sd 0..this fraction of the range (sensor noise; 0 = off)
    jpeg: int = 0  # JPEG re-compression at a quality drawn from this..95 (a compressing camera; 0 = off)
    optics_p: float = 1.0  # share of photos that get blur / noise / JPEG (the rest stay clean; 1 = all)
    degrees: float = 10.0
    translate: float = 0.15
    scale: float = 0.358
    shear: float = 0.9  # degrees
    flip_h: float = 0.5
    flip_v: float = 0.5
    rot90: bool = False  # random multiples of 90 degrees (HAM10000 splits 0 / 1, product balanced
    # accuracy +0.009 / -0.015, accuracy -0.004 / -0.016: off; bench/RESULTS.md `rot90`)
    cutout_p: float = 0.5  # probability that an image gets Cutout
    cutout_scales: tuple = (0.25, 0.125, 0.125, 0.0625, 0.0625, 0.0625, 0.0625)
    cutout_centre_radius: float = 0.5  # fraction of the half-diagonal protected progressively
    fill: float = 0.5  # constant fill of the geometric transform (0..1)
    # batch mixing (BatchMixer): share of batches that get CutMix / mixup, and the Beta(a, a) of the
    # mixing proportion; 0 = off
    cutmix_p: float = 0.0
    mixup_p: float = 0.0
    mix_alpha: float = 1.0

    def __post_init__(self):
        if min(self.cutmix_p, self.mixup_p) < 0 or self.cutmix_p + self.mixup_p > 1:
            raise ValueError(
                f"augmentation cutmix_p and mixup_p must be shares with a sum of at most 1, not "
                f"{self.cutmix_p!r} and {self.mixup_p!r}"
            )
        if self.mix_alpha <= 0:
            raise ValueError(f"augmentation mix_alpha must be positive, not {self.mix_alpha!r}")
        if not (self.jpeg == 0 or 1 <= self.jpeg <= 95):
            raise ValueError(f"augmentation jpeg must be 0 (off) or a JPEG quality 1-95, not {self.jpeg!r}")
        if not 0 <= self.optics_p <= 1:
            raise ValueError(f"augmentation optics_p must be a share between 0 and 1, not {self.optics_p!r}")

    def to_dict(self):
        d = asdict(self)
        d["cutout_scales"] = list(self.cutout_scales)
        return d

    @classmethod
    def from_overrides(cls, overrides: dict | None) -> AugmentConfig:
        """The defaults with ``overrides`` (e.g. ``--augment '{"gamma": 0.4}'``); unknown names are refused."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides or {}) - set(known))
        if unknown:
            raise ValueError(
                f"unknown augmentation setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        defaults = cls()
        for k, v in (overrides or {}).items():
            d = getattr(defaults, k)
            if isinstance(d, bool):
                ok = isinstance(v, bool)
            elif isinstance(d, tuple):
                ok = (
                    isinstance(v, (list, tuple))
                    and len(v) > 0
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                )
            else:  # a number; an int setting (jpeg) takes whole numbers only
                ok = (
                    isinstance(v, (int, float))
                    and not isinstance(v, bool)
                    and (isinstance(d, float) or float(v).is_integer())
                )
            if not ok:
                kind = (
                    "true or false"
                    if isinstance(d, bool)
                    else "a list of numbers"
                    if isinstance(d, tuple)
                    else "a number"
                    if isinstance(d, float)
                    else "a whole number"
                )
                raise ValueError(f"augmentation {k} must be {kind}, not {v!r}")
        kinds = {k: type(getattr(defaults, k)) for k in overrides or {}}
        return cls(**{k: kinds[k](v) if kinds[k] in (int, float, tuple) else v for k, v in (overrides or {}).items()})


def normalise(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    x = x_uint8.float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def jpeg_roundtrip(im: np.ndarray, quality: int) -> np.ndarray:
    """An (H, W, 3) uint8 photo saved as JPEG at ``quality`` (1-95) and read back."""
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own Gaussian sd ``sigma[i]`` in pixels (0 = unchanged)."""
    n, ch, H, W = x.shape
    r = max(1, min(int(np.ceil(3 * float(sigma.max()))), (min(H, W) - 1) // 2))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma.clamp(min=1e-3).view(n, 1).to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (N*C, 2r+1)
    y = F.pad(x.reshape(1, n * ch, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(n * ch, 1, 1, -1), groups=n * ch)
    y = F.conv2d(y, k.view(n * ch, 1, -1, 1), groups=n * ch)
    return y.view(n, ch, H, W)


class BatchMixer:
    """CutMix (Yun et al., ICCV 2019) or mixup (Zhang et al., ICLR 2018) of a batch with a permutation
    of itself.

    ``mixer(x)`` returns ``(x, None)`` for a batch left alone, else ``(mixed, (perm, lam))``: photo i
    is ``lam`` of photo i and ``1 - lam`` of photo ``perm[i]``, so its loss is ``lam * loss(y) +
    (1 - lam) * loss(y[perm])`` (``losses.mixed_loss``). CutMix pastes one box of photo ``perm[i]`` into
    photo i, the same box for the whole batch, and ``lam`` is the share of pixels outside the box
    after clipping at the border."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    @property
    def active(self) -> bool:
        return self.cfg.cutmix_p > 0 or self.cfg.mixup_p > 0

    def __call__(self, x: torch.Tensor):
        c = self.cfg
        u = self.rng.random()
        if u >= c.cutmix_p + c.mixup_p or len(x) < 2:
            return x, None
        lam = float(self.rng.beta(c.mix_alpha, c.mix_alpha))
        perm = torch.from_numpy(self.rng.permutation(len(x)))
        if u >= c.cutmix_p:  # mixup
            return x * lam + x[perm] * (1 - lam), (perm, lam)
        H, W = x.shape[-2:]
        h, w = int(round(H * np.sqrt(1 - lam))), int(round(W * np.sqrt(1 - lam)))
        cy, cx = int(self.rng.integers(H)), int(self.rng.integers(W))
        y0, y1 = max(cy - h // 2, 0), min(cy + h - h // 2, H)
        x0, x1 = max(cx - w // 2, 0), min(cx + w - w // 2, W)
        out = x.clone()
        out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        return out, (perm, 1.0 - (y1 - y0) * (x1 - x0) / (H * W))


class Augmenter:
    """Batch augmentation on uint8 tensors -> normalised float tensors (N, 3, H, W)."""

    def __init__(self, cfg: AugmentConfig, mean, std, seed: int = 0):
        self.cfg = cfg
        self.mean, self.std = mean, std
        self.g = torch.Generator().manual_seed(seed)

    def _u(self, n, lo=-1.0, hi=1.0):
        return torch.rand(n, generator=self.g) * (hi - lo) + lo

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = xb.float().div_(255.0)
        n, _, H, W = x.shape
        # --- colour: saturation / value gains and a small hue rotation (YIQ space)
        if c.hsv_s or c.hsv_v or c.hsv_h:
            gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            sg = (1 + self._u(n) * c.hsv_s).view(n, 1, 1, 1)
            vg = (1 + self._u(n) * c.hsv_v).view(n, 1, 1, 1)
            x = (gray + (x - gray) * sg) * vg
            if c.hsv_h:
                th = self._u(n) * c.hsv_h * 2 * np.pi
                cos, sin = torch.cos(th), torch.sin(th)
                T = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
                Ti = torch.linalg.inv(T)
                R = torch.zeros(n, 3, 3)
                R[:, 0, 0] = 1
                R[:, 1, 1] = cos
                R[:, 1, 2] = -sin
                R[:, 2, 1] = sin
                R[:, 2, 2] = cos
                M = Ti.unsqueeze(0) @ R @ T.unsqueeze(0)
                x = torch.einsum("nij,njhw->nihw", M, x)
            x = x.clamp_(0, 1)
        # --- another camera or light: per-channel gains, tone curve (no random draws when off)
        if c.channel_gain:
            x = (x * (1 + self._u(3 * n) * c.channel_gain).view(n, 3, 1, 1)).clamp_(0, 1)
        if c.gamma:
            x = x.clamp_(min=0).pow_(torch.exp(self._u(n) * float(np.log1p(c.gamma))).view(n, 1, 1, 1))
        # --- another camera's optics and sensor: defocus blur, noise (no random draws when off)
        if (c.blur or c.noise or c.jpeg) and c.optics_p < 1:
            clean = x  # the steps below return new tensors
            keep = torch.rand(n, generator=self.g) >= c.optics_p  # photos that stay clean
        else:
            keep = None
        if c.blur:
            x = gaussian_blur(x, self._u(n, 0.0, c.blur))
        if c.noise:
            sd = self._u(n, 0.0, c.noise).view(n, 1, 1, 1)
            x = (x + sd * torch.randn(x.shape, generator=self.g)).clamp_(0, 1)
        if c.jpeg:
            q = torch.randint(int(c.jpeg), 96, (n,), generator=self.g).tolist()
            u8 = x.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            skip = keep.tolist() if keep is not None else [False] * n  # photos that stay clean: no encoding
            x = torch.from_numpy(np.stack([u8[i] if skip[i] else jpeg_roundtrip(u8[i], q[i]) for i in range(n)]))
            x = x.permute(0, 3, 1, 2).float().div_(255)
        if keep is not None:
            x[keep] = clean[keep]
        # --- flips / 90 degree rotations
        if c.flip_h:
            m = torch.rand(n, generator=self.g) < c.flip_h
            x[m] = x[m].flip(3)
        if c.flip_v:
            m = torch.rand(n, generator=self.g) < c.flip_v
            x[m] = x[m].flip(2)
        if c.rot90 and H == W:
            k = torch.randint(0, 4, (n,), generator=self.g)
            for r in (1, 2, 3):
                m = k == r
                if m.any():
                    x[m] = torch.rot90(x[m], r, (2, 3))
        # --- affine: rotation, translation, scale, shear (inverse map for affine_grid)
        if c.degrees or c.translate or c.scale or c.shear:
            a = self._u(n) * c.degrees * np.pi / 180
            s = 1 + self._u(n) * c.scale
            sh = self._u(n) * c.shear * np.pi / 180
            tx, ty = self._u(n) * c.translate * 2, self._u(n) * c.translate * 2
            cos, sin = torch.cos(a), torch.sin(a)
            A = torch.zeros(n, 2, 3)
            # forward: scale*rotation, then shear; use the inverse for sampling
            fw = torch.zeros(n, 3, 3)
            fw[:, 0, 0] = s * cos
            fw[:, 0, 1] = -s * sin + torch.tan(sh)
            fw[:, 1, 0] = s * sin
            fw[:, 1, 1] = s * cos
            fw[:, 0, 2] = tx
            fw[:, 1, 2] = ty
            fw[:, 2, 2] = 1
            inv = torch.linalg.inv(fw)
            A[:] = inv[:, :2, :]
            grid = F.affine_grid(A, list(x.shape), align_corners=False)
            x = F.grid_sample(x - c.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + c.fill
        # --- centre-sparing Cutout: random sizes and colours, fewer and smaller near the centre
        if c.cutout_p > 0:
            apply = (torch.rand(n, generator=self.g) < c.cutout_p).tolist()
            for i in range(n):
                if not apply[i]:
                    continue
                for sc in c.cutout_scales:
                    cy, cx = float(torch.rand(1, generator=self.g)), float(torch.rand(1, generator=self.g))
                    d = min(
                        1.0, (((cy - 0.5) ** 2 + (cx - 0.5) ** 2) ** 0.5 / 0.7071) / max(c.cutout_centre_radius, 1e-6)
                    )
                    if float(torch.rand(1, generator=self.g)) > 0.25 + 0.75 * d:  # fewer near the centre
                        continue
                    k = sc * (0.3 + 0.7 * d)  # smaller near the centre
                    hh = max(1, int(H * k * float(torch.rand(1, generator=self.g) * 0.5 + 0.75)))
                    ww = max(1, int(W * k * float(torch.rand(1, generator=self.g) * 0.5 + 0.75)))
                    y0, x0 = max(0, int(cy * H - hh / 2)), max(0, int(cx * W - ww / 2))
                    col = torch.rand(3, 1, 1, generator=self.g)
                    x[i, :, y0 : y0 + hh, x0 : x0 + ww] = col
        m = torch.tensor(self.mean).view(1, 3, 1, 1)
        sd = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - m) / sd
