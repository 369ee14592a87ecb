"""Settings of a training run (``TrainConfig``), their checks, and the epoch rule.

The defaults are the recipe used for the HAM10000 benchmark, chosen for a 2-core CPU and about an hour:
EfficientNet-Lite0 from ImageNet, image size chosen per machine (budget.py), stem + first 3 blocks
frozen in the fine model; the coarse model takes the fine model's first 2/3 of blocks, frozen, and
weights each photo by its sub-class's inverse frequency; AdamW with a cosine schedule and a 50-batch
warm-up, square-root inverse-frequency class weights in the fine model, a linear-probe head before
fine-tuning, a weight average, stochastic depth; the thesis augmentation plus another camera's optics;
one view at evaluation. Why each default was chosen, with its measurements: docs/ and bench/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import budget
from .budget import DEFAULT_BUDGET_MINUTES
from .data import AugmentConfig, check_colour_constancy
from .device import resolve_device
from .networks import check_drop_path

BALANCES = ("none", "weights", "sqrt_weights", "focal", "sampler", "logit_adjust")
SUBCLASS_BALANCES = ("subclass_weights", "subclass_sqrt_weights")  # coarse model only
HEAD_INITS = ("random", "probe")


@dataclass
class TrainConfig:
    data: str  # data set directory (labels.csv, or HAM10000's metadata.csv)
    taxonomy: str | dict  # taxonomy JSON file, or the taxonomy itself
    out: str  # artefact directory to write
    backbone: str = "efficientnet_lite0"  # network (networks.BACKBONES)
    pretrained: bool = True  # start from ImageNet weights where the backbone has them
    image_size: int | None = None  # px; None: the largest size whose training fits image_budget_minutes here
    image_budget_minutes: float = DEFAULT_BUDGET_MINUTES  # time budget the automatic image size is chosen for
    progressive_size: int | None = None  # fine model's first progressive_share of epochs at this size (None: off)
    progressive_share: float = budget.DEFAULT_PROGRESSIVE_SHARE
    colour_constancy: str = "shades_of_gray"  # illuminant made grey, in training and prediction ("none": off)
    epochs: int | None = None  # fine model; None: 12, more on training splits under 1,200 photos (epochs_for)
    coarse_epochs: int | None = None  # None: half the fine model's (epochs_for)
    transfer_cut: str = "auto"  # fine blocks the coarse model starts from: "none" | "all" | index | "auto"
    freeze_transferred: bool = True  # coarse model trains only blocks after the cut (faster; serving shares them)
    freeze_blocks: int = 3  # fine model: stem + first N blocks frozen (-1: none)
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" | "sgd" (Nesterov)
    lr0: float = 1e-3  # peak learning rate
    lrf: float = 0.01  # final lr = lr0 * lrf (cosine)
    momentum: float = 0.951  # SGD only
    weight_decay: float = 0.01  # not on biases and norms
    burn_in: int = 50  # warm-up batches (at most a fifth of the stage)
    burn_in_power: float = 4.0  # warm-up lr rises as ((step + 1) / burn_in) ** power
    class_balance: str = "sqrt_weights"  # how the fine model counters class imbalance (BALANCES)
    reweight_from: float = 0.0  # share of fine epochs trained unweighted first (deferred re-weighting)
    logit_adjust_tau: float = 1.0  # "logit_adjust": loss on logits + tau * log(prior); predictions keep prior^(1-tau)
    # coarse model: weight photos by their sub-class, as product fusion already takes the prior from the fine model
    coarse_class_balance: str | None = "subclass_weights"  # None: class_balance
    focal_gamma: float = 2.0  # "focal": focusing exponent
    label_smoothing: float = 0.0
    layer_decay: float = 1.0  # <1: block k of D trains at lr * layer_decay ** (D - k)
    drop_path: float = 0.2  # stochastic depth of trained blocks, rising to this rate at the last (0: off)
    ema_decay: float = 0.998  # >0: keep an exponential moving average of the weights and use it (0: off)
    head_init: str = "probe"  # "probe": head fitted as a linear probe before fine-tuning (LP-FT), or "random"
    fine_models: int = 1  # ensemble of fine models (same split, other seeds); coarse model from the first
    member_class_balance: str | None = None  # class balance of fine models 2..N (None: class_balance)
    holdout: float | None = 0.2  # share of cases held out for evaluation
    folds: int | None = None  # K-fold split instead of the hold-out
    fold: int = 0  # the fold held out
    seed: int = 0  # draws the split and, unless train_seed is set, every draw of training
    train_seed: int | None = None  # draws of training only: other values on one split measure the recipe's spread
    tta: bool = False  # flip test-time augmentation in evaluation (twice the compute)
    channels_last: bool = True  # memory format of the training batches (faster convolutions on CPU)
    threads: int | None = None  # intra-op threads (None: every core)
    adaptive_threads: bool = True  # switch between 1 and N intra-op threads, whichever is faster
    cache_dir: str | None = None  # on-disk decoded-image cache ("" disables)
    positive: list[str] | None = None  # sub-classes of the positive side of a binary question
    binary_epochs: int = 0  # >0: also train a single-stage binary baseline
    augment: dict = field(default_factory=dict)  # overrides of AugmentConfig fields
    max_train_images: int | None = None  # subsample the training split (probes, search)
    fine_from: str | None = None  # re-use the fine model of this artefact (same data, split, taxonomy)
    eval_batch_size: int = 8  # small batches are faster on CPU (bench/inference_speed.py)
    ood_quantile: float = 0.99  # training photos' feature distance quantile that sets the OOD threshold
    metadata: bool = True  # fit the metadata model (age, sex, body site) when the data have them
    metadata_alpha: float = 20.0  # its smoothing toward the class prior, in photos
    metadata_weight: float = 0.5  # exponent of its factors (1: Bayes' rule; <1: the photo shows some of it too)
    int8_calibration_images: int = 0  # >0: store int8 activation ranges from this many training photos (quantize.py)
    triage: bool = True  # fit urgency tiers and the unfamiliar-photo detector on the held-out split
    modality: str | None = None  # the photos' modality where the data has no modality column (triage_fit.py)
    device: str | None = None  # "auto" | "cpu" | "cuda[:N]"; None: DERM_ML_DEVICE, else auto (device.py)

    def resolved(self) -> dict:
        d = asdict(self)
        d["taxonomy"] = None if isinstance(self.taxonomy, dict) else Path(str(self.taxonomy)).name
        d["data"] = None  # never store machine paths in the artefact
        d["out"] = None
        d["cache_dir"] = None
        d["device"] = None  # where it ran is no setting of the model: a run may resume on another device
        d["fine_from"] = None if self.fine_from is None else Path(str(self.fine_from)).name
        d["augmentation"] = AugmentConfig.from_overrides(self.augment).to_dict()  # every field, defaults included
        return d


# Unset epochs keep the photos seen at what a REFERENCE_PHOTOS-photo split gets, in at most
# MAX_EPOCH_FACTOR x the epochs: small splits otherwise get too few optimisation steps (bench/RESULTS.md).
AUTO_EPOCHS = 12
REFERENCE_PHOTOS = 1200
MAX_EPOCH_FACTOR = 3
AUTO_EPOCHS_RULE = (
    f"{AUTO_EPOCHS}, up to {AUTO_EPOCHS * MAX_EPOCH_FACTOR} with fewer than "
    f"{REFERENCE_PHOTOS:,} training photos"
)  # said by the CLI help and the portal form


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


def progressive_epochs(cfg: TrainConfig, epochs: int) -> int:
    """How many of ``epochs`` train at ``progressive_size`` (0: progressive resizing is off)."""
    return 0 if cfg.progressive_size is None else budget.progressive_split(epochs, cfg.progressive_share)


def member_config(cfg: TrainConfig, k: int) -> TrainConfig:
    """Settings of fine model k: member 0 is the run's own; members 1.. get their own seed (head
    init, batch order, augmentation) and, with member_class_balance, their own class balance."""
    if k == 0:
        return cfg
    balance = cfg.member_class_balance or cfg.class_balance
    return replace(cfg, seed=cfg.seed + 1000 * k, class_balance=balance)


def preprocessing_for(cfg: TrainConfig) -> dict:
    """How serving prepares a photo for the networks (stored in the manifest)."""
    from .weights import IMAGENET_MEAN, IMAGENET_STD

    return {
        "size": cfg.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "resize": "shorter_side_then_centre_crop",
        "interpolation": "bicubic",
        "colour_constancy": cfg.colour_constancy,
    }


# ---------------------------------------------------------------------- checks, before any training
def check_config(cfg: TrainConfig, taxonomy) -> None:
    """Refuse settings that cannot work, before any training."""
    check_colour_constancy(cfg.colour_constancy)
    resolve_device(cfg.device)
    check_class_balance(cfg)
    check_layer_decay(cfg)
    check_progressive(cfg)
    if cfg.positive:
        unknown = [p for p in cfg.positive if p not in taxonomy]
        if unknown:
            raise ValueError(f"--positive names unknown sub-classes: {unknown}")


def check_progressive(cfg: TrainConfig) -> None:
    """Refuse progressive-resizing settings that cannot work."""
    if cfg.progressive_size is None:
        return
    if not isinstance(cfg.progressive_size, int) or cfg.progressive_size < 32:
        raise ValueError(
            f"progressive_size must be a whole number of pixels of at least 32, not {cfg.progressive_size!r}"
        )
    if cfg.image_size is not None and cfg.progressive_size >= cfg.image_size:
        raise ValueError(f"progressive_size {cfg.progressive_size} must be smaller than image_size {cfg.image_size}")
    if not 0 < cfg.progressive_share < 1:
        raise ValueError(
            f"progressive_share must be a share between 0 and 1 (exclusive), not {cfg.progressive_share!r}"
        )


def check_layer_decay(cfg: TrainConfig) -> None:
    """Refuse layer-wise learning rates and stochastic depth that cannot work."""
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"layer_decay must be above 0 and at most 1 (1: one learning rate), not {cfg.layer_decay!r}")
    check_drop_path(cfg.drop_path)


def check_class_balance(cfg: TrainConfig) -> None:
    """Refuse unknown class-balance (or head-initialisation) settings rather than train unweighted."""
    for name, val, allowed in (
        ("class_balance", cfg.class_balance, BALANCES),
        ("head_init", cfg.head_init, HEAD_INITS),
        ("member_class_balance", cfg.member_class_balance, (None, *BALANCES)),
        ("coarse_class_balance", cfg.coarse_class_balance, (None, *BALANCES, *SUBCLASS_BALANCES)),
    ):
        if val not in allowed:
            choices = ", ".join(a for a in allowed if a is not None)
            raise ValueError(f"{name} {val!r} is unknown; choose one of {choices}")
    if not 0 <= cfg.reweight_from < 1:
        raise ValueError(
            f"reweight_from must be a share of the epochs from 0 (weighted throughout) to below 1, "
            f"not {cfg.reweight_from!r}"
        )
