"""Tiny end-to-end runs (tiny backbone, 32 px images): train + evaluate + predict, artefact round trip,
cancellation and resume."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inference.ml.predict import Differential, Predictor
from inference.ml.train import TrainConfig, TrainingCancelled, train

from .conftest import ROOT, make_dataset

FAST = dict(
    backbone="tiny", image_size=32, epochs=2, coarse_epochs=1, batch_size=8, cache_dir="", threads=1, fine_models=1
)
ENSEMBLE = {**FAST, "fine_models": 2}


def test_cli_train_evaluate_predict(tmp_path, taxonomy_file, capsys):
    from inference.ml.cli import main

    data = make_dataset(tmp_path / "data", n_per_class=10, extra_labels=("purple",))
    (data / "images" / "img_0003.jpg").write_bytes(b"garbage")  # corrupt
    (data / "images" / "img_0004.jpg").unlink()  # missing
    out = tmp_path / "model"
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--taxonomy",
            str(taxonomy_file),
            "--out",
            str(out),
            "--backbone",
            "tiny",
            "--image-size",
            "32",
            "--epochs",
            "2",
            "--coarse-epochs",
            "1",
            "--batch-size",
            "8",
            "--positive",
            "red",
            "--binary-epochs",
            "1",
            "--threads",
            "1",
        ]
    )
    r = capsys.readouterr()
    assert rc == 0, r.err
    assert "purple: 10" in r.out
    assert "images/img_0003.jpg" in r.out and "images/img_0004.jpg" in r.out
    assert (out / "model.json").is_file() and not (out / ".work").exists()
    man = json.loads((out / "model.json").read_text())
    assert man["preprocessing"]["size"] == 32 and man["split"]["test_cases"]
    assert man["training"]["data"] is None and str(tmp_path) not in json.dumps(man)
    assert man["training"]["augmentation"]["cutout_p"] == 0.5 and "blur" in man["training"]["augmentation"]
    assert man["tta"] is False  # one view by default
    # frozen transfer by default: the coarse model trained only what follows the cut (tiny: 3 of 4 blocks)
    assert man["training"]["freeze_transferred"] is True and man["transfer_cut"] == 3
    assert man["coarse_training"]["frozen"] == [
        "backbone.stem.",
        "backbone.blocks.0.",
        "backbone.blocks.1.",
        "backbone.blocks.2.",
    ]
    # the single-stage binary baseline's training is recorded like the other stages'
    assert man["has_binary"] and len(man["binary_training"]["history"]) == 1
    assert man["binary_training"]["images_per_second"] > 0
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--json", str(tmp_path / "e.json")]) == 0
    r = capsys.readouterr()
    assert "held-out split" in r.out
    rep = json.loads((tmp_path / "e.json").read_text())
    for k in ("flat", "hierarchical_hard", "hierarchical_product", "coarse"):
        for m in ("accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "macro_auc"):
            assert m in rep[k]
    assert "two_stage" in rep and "single_stage" in rep["two_stage"] and "malignancy" in rep
    b = rep["product_minus_flat_bootstrap"]["balanced_accuracy"]
    assert b["ci_low"] <= b["diff"] <= b["ci_high"]
    assert abs(b["diff"] - rep["product_minus_flat"]["balanced_accuracy"]) < 1e-9
    test_cases = set(man["split"]["test_cases"])
    assert rep["n"] == sum(1 for c in test_cases for _ in range(2)) - sum(
        1
        for n, _ in man["data"]["bad_images"]
        if n in ("images/img_0003.jpg", "images/img_0004.jpg") and "case_red_1" in test_cases
    )
    rc = main(
        ["predict", "--model", str(out), str(data / "images" / "img_0000.jpg"), str(data / "images" / "img_0003.jpg")]
    )
    r = capsys.readouterr()
    assert "img_0000.jpg" in r.out and "meta-classes" in r.out
    assert "img_0003.jpg" in r.err and rc == 1


def test_cli_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "inference.ml", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0 and "train" in r.stdout and "search" in r.stdout


def test_training_learns_the_separable_toy_data(tmp_path, taxonomy_file):
    """Four disc colours are separable at a glance: trained end to end, the held-out photos are
    classified far above chance (sub-class 0.25, meta-class 0.5). Augmentation that changes colour
    and the warm-up are off so that 8 short epochs suffice."""
    from inference.ml.evaluate import evaluate

    data = make_dataset(tmp_path / "data", n_per_class=20)
    out = train(
        TrainConfig(
            data=str(data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "m"),
            backbone="tiny",
            image_size=32,
            epochs=8,
            coarse_epochs=4,
            batch_size=8,
            cache_dir="",
            threads=1,
            burn_in=0,
            ema_decay=0.0,
            lr0=0.005,
            freeze_blocks=-1,
            transfer_cut="none",
            drop_path=0.0,
            augment={"hsv_s": 0.0, "hsv_v": 0.0, "cutout_p": 0.0, "blur": 0.0, "noise": 0.0},
        )
    )
    rep = evaluate(out, str(data))
    assert rep["n"] == 16
    assert rep["hierarchical_product"]["balanced_accuracy"] >= 0.75, rep["hierarchical_product"]
    assert rep["flat"]["balanced_accuracy"] >= 0.625, rep["flat"]
    assert rep["coarse"]["balanced_accuracy"] >= 0.75, rep["coarse"]


def test_artefact_round_trip_identical_predictions(tmp_path, taxonomy_file, tiny_data):
    out = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m"), **FAST))
    imgs = [Image.open(p).convert("RGB") for p in sorted((tiny_data / "images").glob("*.jpg"))[:5]]
    P1 = Predictor.load(out, precision="fp32")
    P2 = Predictor.load(out, precision="fp32")
    d1, d2 = P1.predict(imgs), P2.predict(imgs)
    assert all(isinstance(d, Differential) for d in d1)
    for a, b in zip(d1, d2):
        assert a.to_dict() == b.to_dict()
    d = d1[0]
    assert abs(sum(i.probability for i in d.ranked) - 1) < 1e-5
    assert [i.probability for i in d.ranked] == sorted((i.probability for i in d.ranked), reverse=True)
    assert set(d.meta_probabilities) == {"warm", "cool"}
    assert d.malignancy_grade in (1, 2, 3) and 1 <= d.malignancy_score <= 3
    assert d.margin >= 0 and isinstance(d.looks_unfamiliar, bool)
    json.dumps(d.to_dict())
    one = P1.predict_one(imgs[0])
    np.testing.assert_allclose([i.probability for i in one.ranked], [i.probability for i in d.ranked], atol=1e-6)
    # Grad-CAM hooks
    assert P1.preprocess(imgs[0]).shape == (1, 3, 32, 32)
    P1.fine_model.get_submodule(P1.gradcam_layer_name)
    assert not any(p.requires_grad for p in P1.fine_model.parameters())
    # the BN-folded fast path gives the same probabilities as the hookable models
    from inference.ml.infer import model_outputs

    u8 = torch.stack([P1.to_uint8(im) for im in imgs])
    pf_ref = model_outputs(P1.fine_model, u8, P1.mean, P1.std, 8, P1.tta)
    pf_fast, pc_fast, _ = P1.probabilities(u8)
    np.testing.assert_allclose(pf_fast, pf_ref, atol=1e-5)
    hard = P1.predict_one(imgs[0], method="hard")
    assert hard.fused_method == "hard"
    # evaluating on another directory uses all of its images
    from inference.ml.evaluate import evaluate

    other = make_dataset(tmp_path / "other", n_per_class=3, seed=5)
    rep = evaluate(out, other)
    assert rep["scope"].startswith("all images") and rep["n"] == 12
    # weights load with weights_only torch.load-compatible safetensors
    from safetensors.torch import load_file

    assert "fc.weight" in load_file(str(out / "fine.safetensors"))


def test_cancel_leaves_no_artefact_and_resume(tmp_path, taxonomy_file, tiny_data):
    out = tmp_path / "m"
    cfg = TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(out), **{**FAST, "epochs": 3})
    seen = []

    def progress(d):
        seen.append(d)

    def stop():  # interrupt during the second fine epoch
        return (
            any(d.get("event") == "epoch_end" and d["stage"] == "fine" and d["epoch"] == 1 for d in seen)
            and seen[-1].get("epoch") == 2
        )

    with pytest.raises(TrainingCancelled):
        train(cfg, progress=progress, should_stop=stop)
    assert not (out / "model.json").exists()
    assert (out / ".work" / "fine.ckpt").is_file()
    seen2 = []
    train(cfg, progress=seen2.append)
    resumed = [d for d in seen2 if d.get("event") == "resumed"]
    assert resumed and resumed[0]["stage"] == "fine" and resumed[0]["epoch"] == 1
    fine_epochs = sorted({d["epoch"] for d in seen2 if d.get("stage") == "fine" and "batch" in d})
    assert fine_epochs == [2, 3]
    assert (out / "model.json").is_file()
    # a different config in the same unfinished dir is refused; a finished one returns immediately
    assert train(cfg) == out


def test_progress_fields_and_kfold(tmp_path, taxonomy_file, tiny_data):
    seen = []
    cfg = TrainConfig(
        data=str(tiny_data),
        taxonomy=str(taxonomy_file),
        out=str(tmp_path / "m"),
        holdout=None,
        folds=2,
        fold=1,
        **{**FAST, "epochs": 1},
    )
    out = train(cfg, progress=seen.append)
    stages = {d["stage"] for d in seen}
    assert {"cache", "fine", "coarse", "evaluate"} <= stages
    b = next(d for d in seen if d["stage"] == "fine" and "batch" in d)
    assert {"epoch", "epochs", "batch", "loss", "eta_seconds"} <= set(b)
    man = json.loads((out / "model.json").read_text())
    assert man["split"]["kind"] == "kfold" and man["split"]["fold"] == 1


def test_epochs_rule():
    """Unset epochs: 12 fine / 6 coarse, raised on training splits under 1,200 photos so both stages see
    as many photos, at most 3x; epochs that are set are kept (coarse default: half the fine model's)."""
    from inference.ml.train import epochs_for

    cfg = TrainConfig(data="", taxonomy="", out="")
    assert cfg.epochs is None and cfg.coarse_epochs is None
    assert [epochs_for(cfg, n) for n in (20000, 4787, 1200, 900, 600, 400, 100)] == [
        (12, 6),
        (12, 6),
        (12, 6),
        (16, 8),
        (24, 12),
        (36, 18),
        (36, 18),
    ]
    assert epochs_for(TrainConfig(data="", taxonomy="", out="", epochs=2), 300) == (2, 1)
    assert epochs_for(TrainConfig(data="", taxonomy="", out="", epochs=5, coarse_epochs=3), 100) == (5, 3)
    assert epochs_for(TrainConfig(data="", taxonomy="", out="", coarse_epochs=4), 100) == (36, 4)


def test_default_epochs_follow_the_training_split(tmp_path, taxonomy_file, tiny_data):
    seen = []
    cfg = TrainConfig(
        data=str(tiny_data),
        taxonomy=str(taxonomy_file),
        out=str(tmp_path / "m"),
        **{**FAST, "epochs": None, "coarse_epochs": None},
    )
    out = train(cfg, progress=seen.append)
    man = json.loads((out / "model.json").read_text())
    assert man["data"]["n_train"] < 1600  # small split: 3x the epochs
    assert man["training"]["epochs"] == 36 and man["training"]["coarse_epochs"] == 18
    assert man["training"]["epochs_set"] == {"fine": False, "coarse": False}
    assert len(man["fine_training"]["history"]) == 36 and len(man["coarse_training"]["history"]) == 18
    assert {d["epochs"] for d in seen if d.get("stage") == "coarse" and "epochs" in d} == {18}
    assert {d["epochs"] for d in seen if d.get("stage") == "fine" and "epochs" in d} == {36}


def test_fine_from_reuses_fine_model(tmp_path, taxonomy_file, tiny_data):
    from safetensors.torch import load_file

    a = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "a"), **FAST))
    b = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "b"),
            fine_from=str(a),
            coarse_class_balance="none",
            **FAST,
        )
    )
    fa, fb = load_file(str(a / "fine.safetensors")), load_file(str(b / "fine.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    man = json.loads((b / "model.json").read_text())
    assert man["timings_seconds"]["fine"] == 0.0 and man["training"]["coarse_class_balance"] == "none"


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_logit_adjusted_loss_learns_the_prior_to_the_power_one_minus_tau(tau):
    """A model that can only learn a bias, trained with the logit-adjusted loss on labels with prior
    0.8 / 0.2, ends with softmax(bias) proportional to prior ** (1 - tau): the training prior for
    tau 0 (plain cross-entropy), its square root for 0.5, equal classes for 1."""
    from inference.ml.train import logit_offsets, loss_fn

    y = torch.tensor([0] * 8 + [1] * 2)
    offsets = logit_offsets(y.numpy(), 2, tau)
    np.testing.assert_allclose(offsets.numpy(), tau * np.log([0.8, 0.2]), rtol=1e-6)
    bias = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([bias], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = loss_fn(bias.expand(len(y), 2), y, None, "logit_adjust", 2.0, 0.0, offsets)
        loss.backward()
        return loss

    opt.step(closure)
    want = np.array([0.8, 0.2]) ** (1 - tau)
    np.testing.assert_allclose(bias.detach().softmax(0).numpy(), want / want.sum(), atol=1e-3)
    # a class with no training photo gets a finite offset
    assert np.isfinite(logit_offsets(np.array([0, 0, 1]), 3, 1.0).numpy()).all()


def test_mixed_loss_is_cross_entropy_against_the_mixed_labels():
    """For a batch mixed by BatchMixer the loss is lam * loss(own label) + (1 - lam) * loss(label of
    the photo mixed in); unweighted it equals cross-entropy against the mixed one-hot labels, and
    each part keeps its photo's weight."""
    from inference.ml.train import loss_fn, mixed_loss, weighted_loss

    g = torch.Generator().manual_seed(4)
    logits, y = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 0])
    perm, lam = torch.tensor([3, 4, 5, 0, 1, 2]), 0.3

    def plain(lg, t, w):
        return loss_fn(lg, t, w, "none", 2.0, 0.0)

    soft = lam * F.one_hot(y, 3).float() + (1 - lam) * F.one_hot(y[perm], 3).float()
    assert torch.allclose(mixed_loss(logits, y, None, (perm, lam), plain), F.cross_entropy(logits, soft), atol=1e-6)
    assert torch.equal(mixed_loss(logits, y, None, None, plain), plain(logits, y, None))
    w = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 1.0])
    want = lam * weighted_loss(logits, y, w, 0.0) + (1 - lam) * weighted_loss(logits, y[perm], w[perm], 0.0)

    def weighted(lg, t, pw):
        return loss_fn(lg, t, pw, "sqrt_weights", 2.0, 0.0)

    assert torch.allclose(mixed_loss(logits, y, w, (perm, lam), weighted), want, atol=1e-6)


def test_training_with_cutmix_and_mixup_records_them(tmp_path, taxonomy_file, tiny_data):
    out = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "m"),
            augment={"cutmix_p": 0.5, "mixup_p": 0.5},
            **FAST,
        )
    )
    man = json.loads((out / "model.json").read_text())
    aug = man["training"]["augmentation"]
    assert (aug["cutmix_p"], aug["mixup_p"], aug["mix_alpha"]) == (0.5, 0.5, 1.0)
    assert all(np.isfinite(h["loss"]) for h in man["fine_training"]["history"] + man["coarse_training"]["history"])


def test_coarse_model_weighted_by_sub_class(tmp_path, taxonomy_file, tiny_data):
    """coarse_class_balance "subclass_weights" weights every photo of the coarse model by the inverse
    frequency of its sub-class; unknown class balances are refused before training."""
    from inference.ml.data import read_dataset, split_by_cases
    from inference.ml.taxonomy import Taxonomy
    from inference.ml.train import class_weights, loss_fn, weighted_loss

    # the per-photo loss is normalised like F.cross_entropy(weight=): same value when the photo
    # weights are the class weights of the labels
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(12, 3, generator=g), torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    w = class_weights(y.numpy(), 3, "weights")
    ref = torch.nn.functional.cross_entropy(logits, y, weight=w)
    assert torch.allclose(weighted_loss(logits, y, w[y], 0.0), ref, atol=1e-6)
    assert not torch.allclose(weighted_loss(logits, y, torch.ones(12), 0.0), ref, atol=1e-3)
    # with label smoothing the photo's weight covers its whole loss, smoothing term included
    logp = logits.log_softmax(1)
    per = -(0.9 * logp.gather(1, y[:, None]).squeeze(1) + 0.1 * logp.mean(1))
    assert torch.allclose(weighted_loss(logits, y, w[y], 0.1), (per * w[y]).sum() / w[y].sum(), atol=1e-6)
    # the training loss takes one weight per photo: focal loss uses it as the photo's alpha
    lp = logits.log_softmax(1).gather(1, y[:, None]).squeeze(1)
    focal = (-w[y] * (1 - lp.exp()) ** 2.0 * lp).mean()
    assert torch.allclose(loss_fn(logits, y, w[y], "focal", 2.0, 0.0), focal, atol=1e-6)
    assert not torch.allclose(loss_fn(logits, y, None, "focal", 2.0, 0.0), focal, atol=1e-3)
    assert torch.allclose(loss_fn(logits, y, w[y], "sqrt_weights", 2.0, 0.0), ref, atol=1e-6)

    lines = (tiny_data / "labels.csv").read_text().splitlines()  # make "orange" rare: 4 of 10 photos
    orange = [ln for ln in lines if ",orange," in ln]
    (tiny_data / "labels.csv").write_text("\n".join(ln for ln in lines if ln not in orange[4:]) + "\n")
    a = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "a"), **FAST))
    b = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "b"),
            fine_from=str(a),
            coarse_class_balance="subclass_weights",
            **FAST,
        )
    )
    man = json.loads((b / "model.json").read_text())
    assert man["training"]["coarse_class_balance"] == "subclass_weights"
    info = man["coarse_training"]
    # weight x training photos is the same for every sub-class (each counts as much as its siblings)
    tax = Taxonomy.from_json(b / "taxonomy.json")
    records, _ = read_dataset(tiny_data)
    tr, _ = split_by_cases(records, set(man["split"]["test_cases"]))
    counts = np.bincount([tax.sub_classes.index(records[i].label) for i in tr], minlength=len(tax.sub_classes))
    assert info["class_weights"] is None and len(set(counts)) > 1
    np.testing.assert_allclose(np.array(info["subclass_weights"]) * counts, counts.sum() / len(counts), rtol=1e-5)
    assert len(Predictor.load(b, precision="fp32").predict([Image.new("RGB", (40, 40), "gray")])[0].ranked) > 0
    # the logit-adjusted loss: the coarse model's offsets are tau * log(meta-class prior), no weights
    c = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "la"),
            fine_from=str(a),
            coarse_class_balance="logit_adjust",
            logit_adjust_tau=0.5,
            **FAST,
        )
    )
    info = json.loads((c / "model.json").read_text())["coarse_training"]
    meta = np.bincount(
        tax.parent_index[[tax.sub_classes.index(records[i].label) for i in tr]], minlength=len(tax.meta_classes)
    )
    assert info["class_weights"] is None and len(set(meta)) > 1
    np.testing.assert_allclose(info["logit_offsets"], 0.5 * np.log(meta / meta.sum()), rtol=1e-5)
    for key in ("class_balance", "coarse_class_balance", "member_class_balance"):
        with pytest.raises(ValueError, match=f"{key} 'balanced' is unknown; choose one of none, weights"):
            train(
                TrainConfig(
                    data=str(tiny_data),
                    taxonomy=str(taxonomy_file),
                    out=str(tmp_path / key),
                    **{**FAST, key: "balanced"},
                )
            )
        assert not (tmp_path / key / "model.json").exists()
    with pytest.raises(ValueError, match="class_balance 'subclass_weights' is unknown"):  # coarse model only
        train(
            TrainConfig(
                data=str(tiny_data),
                taxonomy=str(taxonomy_file),
                out=str(tmp_path / "c"),
                class_balance="subclass_weights",
                **FAST,
            )
        )


def test_augmenting_thread_uses_one_intra_op_thread():
    """The helper thread that prepares the next batch must not start a second team of intra-op
    threads beside the training step's (on 2 cores that halved the training speed)."""
    from inference.ml import fit as tr

    before = torch.get_num_threads()
    assert tr._POOL.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == before


def test_keep_freed_memory_reports_glibc():
    import platform

    from inference.ml.train import keep_freed_memory

    ok = keep_freed_memory()
    if platform.libc_ver()[0] == "glibc":
        assert ok is True
    else:
        assert ok is False


def test_bf16_and_four_views_follow_the_fp32_path(tmp_path, taxonomy_file, tiny_data):
    from inference.ml.predict import flip_views

    out = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m"), **FAST))
    imgs = [Image.open(p).convert("RGB") for p in sorted((tiny_data / "images").glob("*.jpg"))[:12]]
    P32 = Predictor.load(out, precision="fp32")
    P16 = Predictor.load(out, precision="bf16")
    assert (P32.precision, P16.precision) == ("fp32", "bf16")
    fast = P16._fast_fine  # stem + first blocks float32, the rest bfloat16 (networks.MixedBf16)
    assert {p.dtype for p in fast.front.parameters()} == {torch.float32}
    assert {p.dtype for p in fast.back.parameters()} == {torch.bfloat16}
    assert next(P16.fine_model.parameters()).dtype == torch.float32  # Grad-CAM stays float32
    u8 = torch.stack([P32.to_uint8(im) for im in imgs])
    f32, c32, _ = P32.probabilities(u8)
    f16, c16, feat16 = P16.probabilities(u8)
    assert f16.dtype == np.float32 and feat16.dtype == np.float32
    np.testing.assert_allclose(f16.sum(1), 1, atol=1e-5)
    assert np.abs(f16 - f32).max() < 0.05 and np.abs(c16 - c32).max() < 0.05
    assert not np.array_equal(f16, f32)  # it really ran in bfloat16
    # four views = mean of the single-view probabilities of the photo and its three flips
    P32.tta, P32.tta_views = True, 4
    f4, c4, _ = P32.probabilities(u8)
    P32.tta_views = 1
    singles = [P32.probabilities(v.contiguous())[0] for v in flip_views(u8, 4).split(len(u8))]
    np.testing.assert_allclose(f4, np.mean(singles, 0), atol=1e-5)
    assert [v.shape for v in flip_views(u8, 4).split(len(u8))] == [u8.shape] * 4
    with pytest.raises(ValueError, match="views must be 1, 2 or 4"):
        flip_views(u8, 3)


def test_precision_setting(monkeypatch):
    from inference.ml.networks import native_bf16, resolve_precision

    monkeypatch.delenv("DERM_ML_PRECISION", raising=False)
    assert (
        resolve_precision("fp32") == "fp32"
        and resolve_precision("BF16") == "bf16"
        and resolve_precision("int8") == "int8"
    )
    assert resolve_precision() == "fp32"  # float32 through ONNX Runtime
    assert resolve_precision(onnxruntime=False) == ("bf16" if native_bf16() else "fp32")
    monkeypatch.setenv("DERM_ML_PRECISION", "fp32")
    assert resolve_precision() == "fp32"
    with pytest.raises(ValueError, match="precision must be auto, fp32, bf16 or int8"):
        resolve_precision("fp16")


def test_weight_average_and_resume(tmp_path, taxonomy_file, tiny_data):
    from inference.ml.train import WeightAverage

    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightAverage(m, 0.5)
    start = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    for _ in range(30):
        ema.update(m)
    assert ema.steps == 30
    w = dict(zip(ema.names, ema.avg))["0.weight"]
    np.testing.assert_allclose(w, start + 1.0, atol=1e-5)  # converges to constant weights
    with torch.no_grad():
        m[0].weight.add_(2.0)  # now start + 3
    ema.update(m)  # decay 0.5 after warm-up: halfway from start + 1 to start + 3
    np.testing.assert_allclose(dict(zip(ema.names, ema.avg))["0.weight"], start + 2.0, atol=1e-5)
    e2 = WeightAverage(m, 0.5)
    e2.load_state_dict(ema.state_dict())
    e2.copy_to(m)
    np.testing.assert_allclose(m[0].weight.detach(), start + 2.0, atol=1e-5)
    # a run with the average interrupted and resumed ends with the same weights as one without a break
    cfg = dict(FAST, epochs=2, coarse_epochs=1, ema_decay=0.9)
    a = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "a"), **cfg))
    seen = []

    def stop():
        return any(d.get("event") == "epoch_end" and d["stage"] == "fine" for d in seen) and seen[-1].get("epoch") == 2

    with pytest.raises(TrainingCancelled):
        train(
            TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "b"), **cfg),
            progress=seen.append,
            should_stop=stop,
        )
    b = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "b"), **cfg))
    from safetensors.torch import load_file

    fa, fb = load_file(str(a / "fine.safetensors")), load_file(str(b / "fine.safetensors"))
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], atol=1e-5, rtol=1e-4)
    assert json.loads((a / "model.json").read_text())["training"]["ema_decay"] == 0.9


def test_ensemble_of_fine_models(tmp_path, taxonomy_file, tiny_data):
    """Two fine models: both stored, the prediction is the mean of their probabilities, the first
    alone is selectable, progress names the member, Grad-CAM averages the members' maps."""
    from safetensors.torch import load_file

    from inference.ml.explain import CamSettings, _cams, explain
    from inference.ml.infer import model_outputs

    seen = []
    out = train(
        TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "e"), **ENSEMBLE),
        progress=seen.append,
    )
    man = json.loads((out / "model.json").read_text())
    assert man["fine_members"] == 2 and len(man["fine_members_training"]) == 2
    assert len(man["timings_seconds"]["fine_members"]) == 2
    f0, f1 = load_file(str(out / "fine.safetensors")), load_file(str(out / "fine_1.safetensors"))
    assert not torch.equal(f0["fc.weight"], f1["fc.weight"])  # other seed, other model
    members = {(d.get("member"), d.get("members")) for d in seen if d.get("stage") == "fine" and "batch" in d}
    assert members == {(1, 2), (2, 2)}
    first = [d for d in seen if d.get("stage") == "fine" and d.get("member") == 1 and "batch" in d][-1]
    assert first["eta_seconds"] > 0  # the second member is still to come

    imgs = [Image.open(p).convert("RGB") for p in sorted((tiny_data / "images").glob("*.jpg"))[:10]]
    P = Predictor.load(out, precision="fp32")
    P1 = Predictor.load(out, precision="fp32", members=1)
    assert len(P.fine_models) == 2 and len(P1.fine_models) == 1
    u8 = torch.stack([P.to_uint8(im) for im in imgs])
    pf, _, feat = P.probabilities(u8)
    pf1, _, feat1 = P1.probabilities(u8)
    refs = [model_outputs(m, u8, P.mean, P.std, 8, P.tta) for m in P.fine_models]
    np.testing.assert_allclose(pf, (refs[0] + refs[1]) / 2, atol=1e-5)
    np.testing.assert_allclose(pf1, refs[0], atol=1e-5)
    assert np.abs(pf - pf1).max() > 1e-4
    np.testing.assert_allclose(feat, feat1, atol=1e-6)  # OOD features: first member
    with pytest.raises(ValueError, match="members must be between 1 and 2"):
        Predictor.load(out, members=3)
    # the evaluation written at training time is the ensemble's
    from inference.ml.evaluate import evaluate

    rep = evaluate(out, tiny_data, precision="fp32")
    assert rep["fine_members"] == 2
    assert abs(rep["flat"]["accuracy"] - json.loads((out / "metrics.json").read_text())["flat"]["accuracy"]) < 1e-9
    # Grad-CAM of a sub-class: mean of the members' maps
    maps = explain(P, imgs[0], [P.taxonomy.sub_classes[0]], (), CamSettings())  # Grad-CAM at the head
    x = P.preprocess(imgs[0]).contiguous(memory_format=torch.channels_last)
    want = np.mean([_cams(m, P.gradcam_layer_name, x, [0])[0] for m in P.fine_models], axis=0)
    np.testing.assert_allclose(maps[0].cam, want, rtol=1e-5, atol=1e-7)


def test_fine_from_adds_a_member_to_an_artefact(tmp_path, taxonomy_file, tiny_data):
    from safetensors.torch import load_file

    a = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "a"), **FAST))
    b = train(
        TrainConfig(
            data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "b"), fine_from=str(a), **ENSEMBLE
        )
    )
    fa, fb = load_file(str(a / "fine.safetensors")), load_file(str(b / "fine.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)  # member 0 reused as it was
    assert (b / "fine_1.safetensors").is_file()
    man = json.loads((b / "model.json").read_text())
    assert man["fine_members"] == 2 and man["timings_seconds"]["fine"] > 0  # member 1 was trained
    assert man["timings_seconds"]["fine_reused_seconds"] > 0
    # the same member 1 as a run that trains both from scratch (same seeds)
    c = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "c"), **ENSEMBLE))
    f1b, f1c = load_file(str(b / "fine_1.safetensors")), load_file(str(c / "fine_1.safetensors"))
    assert all(torch.equal(f1b[k], f1c[k]) for k in f1b)


def test_members_with_their_own_class_balance(tmp_path, taxonomy_file, tiny_data):
    """member_class_balance trains fine models 2..N with another loss; fine_from refuses to re-use a
    member that was trained with another class balance than the run asks for."""
    from safetensors.torch import load_file

    a = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "a"), **ENSEMBLE))
    b = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "b"),
            member_class_balance="focal",
            **ENSEMBLE,
        )
    )
    fa0, fb0 = load_file(str(a / "fine.safetensors")), load_file(str(b / "fine.safetensors"))
    assert all(torch.equal(fa0[k], fb0[k]) for k in fa0)  # member 0 keeps the run's balance
    fa1, fb1 = load_file(str(a / "fine_1.safetensors")), load_file(str(b / "fine_1.safetensors"))
    assert not all(torch.equal(fa1[k], fb1[k]) for k in fa1)  # member 1: same seed, other loss
    infos = json.loads((b / "model.json").read_text())["fine_members_training"]
    assert [i["class_balance"] for i in infos] == ["sqrt_weights", "focal"]
    from inference.ml.errors import ArtefactError

    with pytest.raises(ArtefactError, match="fine model 2 of the artefact was trained with class balance 'focal'"):
        train(
            TrainConfig(
                data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "c"), fine_from=str(b), **ENSEMBLE
            )
        )


def test_colour_constancy_from_training_to_prediction(tmp_path, taxonomy_file, tiny_data):
    """A model trained with shades-of-gray colour constancy (the default) records it and applies it
    wherever it sees a photo (predict, evaluate), so a colour cast does not change its differential;
    "none" trains on the photos as taken."""
    import shutil

    from inference.ml.evaluate import model_probabilities

    sog = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "sog"), **FAST))
    assert json.loads((sog / "model.json").read_text())["preprocessing"]["colour_constancy"] == "shades_of_gray"
    assert Predictor.load(sog, precision="fp32").colour == "shades_of_gray"
    # served at another input size than trained (bench/compare_runs.py --size-b): same photos, other pixels
    native, larger = (model_probabilities(sog, tiny_data, "fp32", size=s) for s in (None, 64))
    assert larger["predictor"].size == 64 != native["predictor"].size
    assert larger["p_fine"].shape == native["p_fine"].shape and np.array_equal(larger["y"], native["y"])
    assert np.allclose(larger["p_fine"].sum(1), 1, atol=1e-4) and not np.allclose(larger["p_fine"], native["p_fine"])
    with pytest.raises(ValueError, match="size must be between 32 and 1024 px, not 8"):
        model_probabilities(sog, tiny_data, "fp32", size=8)
    # the toy classes differ only by colour, so a corrected model learns little; to see the
    # correction at work, serve a model that does react to colour with and without it
    plain = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "plain"),
            colour_constancy="none",
            **{**FAST, "epochs": 10, "lr0": 3e-2, "ema_decay": 0.0},
        )
    )
    corrected = Path(shutil.copytree(plain, tmp_path / "corrected"))
    man = json.loads((corrected / "model.json").read_text())
    assert man["preprocessing"]["colour_constancy"] == "none"
    man["preprocessing"]["colour_constancy"] = "shades_of_gray"
    (corrected / "model.json").write_text(json.dumps(man))
    legacy = Path(shutil.copytree(plain, tmp_path / "legacy"))  # an artefact from before the option
    del man["preprocessing"]["colour_constancy"]
    (legacy / "model.json").write_text(json.dumps(man))
    assert Predictor.load(legacy, precision="fp32").colour == "none"

    def cast(im):
        return np.clip(im * np.array([0.75, 1.0, 1.3]), 0, 255).astype(np.uint8)

    change = {}
    for name, model in (("plain", plain), ("corrected", corrected)):
        R0 = model_probabilities(model, tiny_data, "fp32")
        R1 = model_probabilities(model, tiny_data, "fp32", photo_transform=cast)
        change[name] = np.abs(R0["p_fine"] - R1["p_fine"]).max()
        P = Predictor.load(model, precision="fp32")
        img = Image.open(sorted((tiny_data / "images").glob("*.jpg"))[0]).convert("RGB")
        a, b = P.predict([img, Image.fromarray(cast(np.asarray(img, np.float32)))])
        pa, pb = (np.array([i.probability for i in sorted(d.ranked, key=lambda i: i.sub_class)]) for d in (a, b))
        change[name + " predict"] = np.abs(pa - pb).max()
    assert change["plain"] > 0.05 and change["plain predict"] > 0.05, change  # the cast matters ...
    assert change["corrected"] < 0.3 * change["plain"], change  # ... far less once corrected
    assert change["corrected predict"] < 0.3 * change["plain predict"], change
    with pytest.raises(ValueError, match="colour constancy"):
        train(
            TrainConfig(
                data=str(tiny_data),
                taxonomy=str(taxonomy_file),
                out=str(tmp_path / "b"),
                fine_from=str(sog),
                colour_constancy="none",
                **FAST,
            )
        )
    with pytest.raises(ValueError, match="'white_patch' is unknown"):
        train(
            TrainConfig(
                data=str(tiny_data),
                taxonomy=str(taxonomy_file),
                out=str(tmp_path / "c"),
                colour_constancy="white_patch",
                **FAST,
            )
        )


def test_boolean_flags_of_train():
    import argparse

    from inference.ml.cli import add_train_args, config_from_args

    p = argparse.ArgumentParser()
    add_train_args(p)
    base = ["--data", "d", "--taxonomy", "t.json", "--out", "o"]
    assert config_from_args(p.parse_args(base)).tta is False
    assert config_from_args(p.parse_args(base + ["--tta"])).tta is True
    assert config_from_args(p.parse_args(base + ["--no-tta"])).tta is False
    assert config_from_args(p.parse_args(base)).freeze_transferred is True
    assert config_from_args(p.parse_args(base + ["--no-freeze-transferred"])).freeze_transferred is False
    # not a flag, but the same parser: --train-seed beside --seed
    seeds = config_from_args(p.parse_args(base + ["--seed", "2", "--train-seed", "5"]))
    assert (seeds.seed, seeds.train_seed) == (2, 5)
    assert config_from_args(p.parse_args(base)).train_seed is None
    assert config_from_args(p.parse_args(base)).drop_path == 0.2
    assert config_from_args(p.parse_args(base + ["--drop-path", "0"])).drop_path == 0.0


def test_progressive_resizing_trains_the_first_epochs_smaller(tmp_path, taxonomy_file, tiny_data):
    """progressive_size: the fine model's first progressive_share of epochs see the photos downscaled,
    the last ones image_size; the coarse model trains at image_size throughout; sizes that cannot
    work are refused before training."""
    from inference.ml.train import build_model, check_progressive, fit

    cfg = TrainConfig(data="", taxonomy={}, out="", **{**FAST, "image_size": 48}, progressive_size=32)
    model = build_model(cfg, 3)
    sizes = []
    model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[-1]) if m.training else None)
    images = torch.randint(0, 256, (24, 3, 48, 48), dtype=torch.uint8)
    info = fit(model, images, np.arange(24) % 3, np.arange(24), cfg, "fine", 3, None, [])
    assert sizes == [32] * 6 + [48] * 3  # 3 batches of 8 per epoch; 2 of 3 epochs at 32 px
    assert info["progressive"] == {"size": 32, "epochs": 2}
    for bad, msg in (
        ({"progressive_size": 48}, "smaller than image_size 48"),
        ({"progressive_size": 16}, "at least 32"),
        ({"progressive_share": 1.0}, "progressive_share"),
    ):
        with pytest.raises(ValueError, match=msg):
            check_progressive(
                TrainConfig(data="", taxonomy={}, out="", image_size=48, **{"progressive_size": 32, **bad})
            )
    out = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "m"),
            **{**FAST, "image_size": 48, "epochs": 3},
            progressive_size=32,
        )
    )
    man = json.loads((out / "model.json").read_text())
    assert man["fine_training"]["progressive"] == {"size": 32, "epochs": 2}
    assert "progressive" not in man["coarse_training"] and man["preprocessing"]["size"] == 48
    assert man["training"]["progressive_size"] == 32


def test_layer_decay_gives_earlier_blocks_smaller_learning_rates(monkeypatch):
    """layer_decay d: block k of D trains at lr * d ** (D - k), the head at lr; fit applies the scale
    at every step; 1 keeps one rate; values outside (0, 1] are refused."""
    from inference.ml import fit as fitting  # fit() looks these up in its own module
    from inference.ml import train as T

    cfg = TrainConfig(data="", taxonomy={}, out="", **FAST, layer_decay=0.5)
    model = T.build_model(cfg, 3)
    D = model.num_blocks + 1
    opts = []
    real = T.make_optimizer
    monkeypatch.setattr(fitting, "make_optimizer", lambda c, m: opts.append(real(c, m)) or opts[-1])
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    T.fit(model, images, np.arange(16) % 3, np.arange(16), cfg, "fine", 1, None, [])
    group_of = {id(p): g for g in opts[0].param_groups for p in g["params"]}
    last_lr = T.lr_at(1, 2, cfg)  # 2 batches of 8: the schedule's value at the last step
    for name, p in model.named_parameters():
        depth = (
            0
            if name.startswith("backbone.stem.")
            else (int(name.split(".")[2]) + 1 if name.startswith("backbone.blocks.") else D)
        )
        g = group_of[id(p)]
        assert g["lr_scale"] == 0.5 ** (D - depth), name
        assert g["lr"] == pytest.approx(last_lr * 0.5 ** (D - depth)), name
        assert g["weight_decay"] == (0.0 if p.ndim <= 1 else cfg.weight_decay), name
    assert group_of[id(model.fc.weight)]["lr_scale"] == 1.0
    one = T.make_optimizer(TrainConfig(data="", taxonomy={}, out="", **FAST), model)
    assert len(one.param_groups) == 2 and {g["lr_scale"] for g in one.param_groups} == {1.0}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="layer_decay"):
            T.check_layer_decay(TrainConfig(data="", taxonomy={}, out="", layer_decay=bad))
    for bad in (-0.1, 1.0):  # stochastic depth is checked beside it
        with pytest.raises(ValueError, match="drop_path"):
            T.check_layer_decay(TrainConfig(data="", taxonomy={}, out="", drop_path=bad))
    dp = T.build_model(
        TrainConfig(data="", taxonomy={}, out="", backbone="efficientnet_lite0", pretrained=False, drop_path=0.2), 3
    )
    assert max(b.drop_path for b in dp.backbone.blocks) == pytest.approx(0.2 * 14 / 15)  # the last block has no skip


def test_deferred_reweighting_weights_only_the_last_epochs(monkeypatch):
    """reweight_from s: the first round(s * epochs) epochs train with no photo weights, the rest with
    class_balance's; 0 weights every epoch; shares outside [0, 1) are refused before training."""
    from inference.ml import fit as fitting  # fit() looks these up in its own module
    from inference.ml import train as T

    seen = []
    real = T.loss_fn
    monkeypatch.setattr(fitting, "loss_fn", lambda lg, t, w, *a: seen.append((t.clone(), w)) or real(lg, t, w, *a))
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    y = np.array([0] * 10 + [1] * 4 + [2] * 2)
    expected = T.class_weights(y, 3, "sqrt_weights")
    for share, unweighted in ((0.67, 4), (0.0, 0)):  # 3 epochs of 2 batches
        seen.clear()
        cfg = TrainConfig(data="", taxonomy={}, out="", **FAST, reweight_from=share)
        T.fit(T.build_model(cfg, 3), images, y, np.arange(16), cfg, "fine", 3, None, [])
        assert [w is None for _, w in seen] == [True] * unweighted + [False] * (6 - unweighted)
        for t, w in seen[unweighted:]:
            torch.testing.assert_close(w, expected[t])  # each photo weighted by its class
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="reweight_from"):
            T.check_class_balance(TrainConfig(data="", taxonomy={}, out="", reweight_from=bad))


def test_eta_of_a_progressive_stage_counts_the_full_size_epochs_slower():
    """During the low-resolution epochs the ETA prices the full-size batches by the pixel ratio; at
    one resolution it is batches x batch size / speed."""
    from inference.ml.train import eta_seconds

    assert eta_seconds(0, 10, 32, 64.0) == pytest.approx(5.0)
    # 4 batches left at 112 px and 10 at 224 px, at 64 img/s measured at 112 px: 2 s + 10 x 0.5 s x 4
    assert eta_seconds(4, 10, 32, 64.0, (112 / 224) ** 2) == pytest.approx(2.0 + 20.0)


def test_eta_speed_follows_a_load_that_ends_rather_than_averaging_since_the_start():
    """The ETA's speed is measured over the last window of batches: after 4 slow batches (10 img/s)
    and 4 fast ones (40 img/s) with a window of 4 it is 40, where the average since the start is 16;
    a reset (new resolution) forgets the old batches."""
    from inference.ml.train import RecentSpeed

    now = [0.0]
    r = RecentSpeed(4, clock=lambda: now[0])
    for dt in [3.2] * 4 + [0.8] * 4:
        now[0] += dt
        r.add(32)
    assert r.speed() == pytest.approx(40.0)  # the average since the start would say 8 x 32 / 16 s = 16
    r.reset()
    now[0] += 1.0
    r.add(32)
    assert r.speed() == pytest.approx(32.0)
    r2 = RecentSpeed(4, clock=lambda: now[0])  # fewer batches than the window: all of them count
    now[0] += 3.2
    r2.add(32)
    now[0] += 0.8
    r2.add(32)
    assert r2.speed() == pytest.approx(16.0)


def test_ensemble_eta_adds_each_member_left_as_long_as_this_one():
    """Member 1 of 3, 100 s in with 50 s left: two more members of 150 s each, so 350 s in all;
    the last member adds nothing; plain progress passes through without member keys."""
    from inference.ml.progress import member_progress as _member_progress

    seen = []
    _member_progress(seen.append, 0, 3)({"stage": "fine", "eta_seconds": 50.0, "elapsed_seconds": 100.0})
    _member_progress(seen.append, 2, 3)({"stage": "fine", "eta_seconds": 50.0, "elapsed_seconds": 100.0})
    assert [d["eta_seconds"] for d in seen] == [pytest.approx(350.0), pytest.approx(50.0)]
    assert (seen[0]["member"], seen[0]["members"]) == (1, 3)
    add = seen.append
    assert _member_progress(add, 0, 1) is add


def _with_metadata(root):
    """Add age, sex and site columns to a generic dataset: red lesions on the face of the old,
    blue ones on the trunk of the young, the others anywhere; one photo in five without them."""
    import csv

    rows = list(csv.DictReader(open(root / "labels.csv")))
    rng = np.random.default_rng(1)
    for i, r in enumerate(rows):
        if i % 5 == 4:
            r.update(age="", sex="unknown", site="")
        elif r["label"] == "red":
            r.update(age="72", sex="female", site="face")
        elif r["label"] == "blue":
            r.update(age="25", sex="male", site="trunk")
        else:
            r.update(
                age=str(rng.integers(20, 80)),
                sex=rng.choice(["male", "female"]),
                site=rng.choice(["face", "trunk", "back"]),
            )
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "case_id", "age", "sex", "site"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_metadata_model_trained_stored_served_and_evaluated(tmp_path, taxonomy_file):
    data = _with_metadata(make_dataset(tmp_path / "data", n_per_class=12))
    out = train(TrainConfig(data=str(data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m"), **FAST))
    man = json.loads((out / "model.json").read_text())
    assert (out / "metadata.json").is_file()
    assert set(man["metadata"]["fields"]) == {"age", "sex", "site"} and man["metadata"]["source"] == "training split"
    metrics = json.loads((out / "metrics.json").read_text())
    wm = metrics["with_metadata"]
    assert {"flat", "hierarchical_hard", "hierarchical_product", "coarse", "with_minus_without"} <= set(wm)
    import csv

    test_rows = [
        r for r in csv.DictReader(open(data / "labels.csv")) if r["case_id"] in set(man["split"]["test_cases"])
    ]
    assert wm["with_metadata_share"] == pytest.approx(np.mean([bool(r["site"]) for r in test_rows]))
    P = Predictor.load(out, precision="fp32")
    imgs = [Image.open(p).convert("RGB") for p in sorted((data / "images").glob("*.jpg"))[:4]]
    plain = P.predict(imgs)
    red = P.taxonomy.sub_classes.index("red")

    def probs(d):
        return {i.sub_class: i.probability for i in d.ranked}

    # no usable field: exactly the photo models' differential
    same = P.predict(imgs, metadata=[{}, {"site": "elbow"}, {"age": "?"}, {"sex": "unknown"}])
    for a, b in zip(plain, same):
        assert probs(a) == pytest.approx(probs(b), abs=1e-9)
        assert b.extra["metadata_used"] == {}
    face = P.predict(imgs, metadata=[{"age": 75, "site": "Face", "sex": "F"}] * 4)
    for a, b in zip(plain, face):
        assert probs(b)["red"] > probs(a)["red"]
        assert b.meta_probabilities["warm"] > a.meta_probabilities["warm"]
        assert b.extra["metadata_used"] == {"age": "7", "sex": "female", "site": "face"}
        assert sum(probs(b).values()) == pytest.approx(1, abs=1e-6)
    one = P.predict_one(imgs[0], metadata={"site": "trunk"})
    assert probs(one)["red"] < probs(plain[0])["red"]
    with pytest.raises(ValueError, match="1 metadata rows for 4 images"):
        P.predict(imgs, metadata=[{}])
    assert P.metadata_fine.classes[red] == "red"
    # evaluate reports the block too; the CLI takes --age/--sex/--site
    from inference.ml.evaluate import evaluate, format_report

    rep = evaluate(out, data)
    assert "with_metadata" in rep and "with patient metadata" in format_report(rep)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference.ml",
            "predict",
            "--model",
            str(out),
            "--site",
            "face",
            "--age",
            "70",
            str(sorted((data / "images").glob("*.jpg"))[0]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "with patient metadata: age 7, site face" in r.stdout
    # --no-metadata: no file, no block
    off = train(
        TrainConfig(data=str(data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m2"), metadata=False, **FAST)
    )
    assert not (off / "metadata.json").exists()
    assert json.loads((off / "model.json").read_text())["metadata"] is None
    assert Predictor.load(off, precision="fp32").predict(imgs[:1], metadata=[{"site": "face"}])[0].extra == {
        "metadata_used": {}
    }


def test_probe_head_is_scikit_learns_logistic_regression():
    """The linear probe of LP-FT minimises what scikit-learn's LogisticRegression (lbfgs, multinomial)
    does at C = N / sum(weights): same probabilities, with and without photo weights."""
    from sklearn.linear_model import LogisticRegression

    from inference.ml.train import probe_head

    rng = np.random.default_rng(0)
    n, f, c = 240, 12, 3
    y = rng.integers(0, c, n)
    x = rng.normal(size=(n, f)) + np.eye(c, f)[y] * 1.5  # overlapping classes: a finite optimum
    for w in (None, rng.uniform(0.2, 3.0, n)):
        fc = torch.nn.Linear(f, c)
        info = probe_head(
            fc,
            torch.tensor(x, dtype=torch.float32),
            torch.as_tensor(y),
            None if w is None else torch.tensor(w, dtype=torch.float32),
            strengths=(1.0,),
        )
        C = 1.0 if w is None else n / w.sum()  # our mean is weighted, the penalty divided by N
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(x, y, sample_weight=w)
        ours = torch.softmax(fc(torch.tensor(x, dtype=torch.float32)), 1).detach().numpy()
        np.testing.assert_allclose(ours, ref.predict_proba(x), atol=2e-3)
        assert info["train_accuracy"] == pytest.approx((ours.argmax(1) == y).mean())
    # several strengths: the one with the lowest held-out loss; on 40 photos in 12 noisy dimensions
    # the weakest L2 overfits, so a stronger one wins
    few = rng.choice(n, 40, replace=False)
    info = probe_head(
        torch.nn.Linear(f, c),
        torch.tensor(x[few] + rng.normal(size=(40, f)) * 2, dtype=torch.float32),
        torch.as_tensor(y[few]),
        strengths=(100.0, 1.0, 0.01),
    )
    assert set(info["validation_loss"]) == {"100.0", "1.0", "0.01"}
    assert info["validation_loss"][str(info["C"])] == min(info["validation_loss"].values())
    assert info["C"] != 100.0


def test_training_features_leave_batchnorm_statistics_alone():
    from inference.ml.networks import Classifier, freeze_first_blocks
    from inference.ml.train import frozen_modules, training_features

    m = Classifier("tiny", 3)
    frozen_bn = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)][0]
    frozen = frozen_modules(m, freeze_first_blocks(m, 1))
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    imgs = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    feats = training_features(m, imgs, np.arange(10), lambda xb: xb.float() / 255, 4, frozen)
    assert feats.shape == (10, m.backbone.num_features)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not m.training and not frozen_bn.training
    with torch.no_grad():  # batch statistics, not the running ones: differs from eval mode
        assert not torch.allclose(feats, m.features(imgs.float() / 255), atol=1e-4)


def test_head_probe_before_fine_tuning(tmp_path, taxonomy_file, tiny_data):
    """head_init="probe" (the default): every stage's head starts as a linear probe (recorded, with
    its training accuracy), the run trains and evaluates as usual; "random" skips it; unknown
    settings are refused."""
    assert TrainConfig(data="d", taxonomy="t", out="o").head_init == "probe"
    seen = []
    out = train(
        TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m"), **FAST),
        progress=seen.append,
    )
    man = json.loads((out / "model.json").read_text())
    assert man["training"]["head_init"] == "probe"
    for stage in ("fine_training", "coarse_training"):
        probe = man[stage]["head_probe"]
        assert 0.0 <= probe["train_accuracy"] <= 1.0 and np.isfinite(probe["loss"]) and probe["seconds"] >= 0
        assert probe["C"] in (1.0, 0.1, 0.01, 0.001) and len(probe["validation_loss"]) == 4
    assert [d["stage"] for d in seen if d.get("event") == "head_probe"] == ["fine", "coarse"]
    assert sum("head probe: L2 strength C" in d.get("message", "") for d in seen) == 2  # the log says what it chose
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["hierarchical_product"]["accuracy"])
    plain = train(
        TrainConfig(
            data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "p"), head_init="random", **FAST
        )
    )
    plain = json.loads((plain / "model.json").read_text())
    assert "head_probe" not in plain["fine_training"]
    with pytest.raises(ValueError, match="head_init 'lp' is unknown"):
        train(
            TrainConfig(
                data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "x"), head_init="lp", **FAST
            )
        )


def test_train_seed_redraws_training_but_keeps_the_split(tmp_path, taxonomy_file, tiny_data):
    """train_seed: the same held-out cases as seed alone, other weights; train_seed equal to seed gives
    the same weights as seed alone (the default is unchanged); the manifest records both seeds."""
    from safetensors.torch import load_file

    runs = {}
    for name, extra in {"a": {}, "same": {"train_seed": 0}, "other": {"train_seed": 3}}.items():
        out = train(
            TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / name), **FAST, **extra)
        )
        runs[name] = (json.loads((out / "model.json").read_text()), load_file(str(out / "fine.safetensors")))
    (ma, wa), (ms, ws), (mo, wo) = runs["a"], runs["same"], runs["other"]
    assert ma["split"]["test_cases"] == ms["split"]["test_cases"] == mo["split"]["test_cases"]
    assert ma["split"]["seed"] == mo["split"]["seed"] == mo["seed"] == 0
    assert (ma["train_seed"], ms["train_seed"], mo["train_seed"]) == (0, 0, 3)
    assert all(torch.equal(wa[k], ws[k]) for k in wa)
    assert not torch.equal(wa["fc.weight"], wo["fc.weight"])
    # another seed draws another split
    b = train(
        TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "b"), **{**FAST, "seed": 1})
    )
    assert json.loads((b / "model.json").read_text())["split"]["test_cases"] != ma["split"]["test_cases"]
