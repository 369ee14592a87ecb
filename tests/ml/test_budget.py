"""The image size chosen within a time budget (budget.py): the estimate, the choice, and a training
run with the size unset."""

import json

import pytest
import torch

from inference.ml import artefact as art
from inference.ml import budget
from inference.ml.networks import Classifier
from inference.ml.taxonomy import Taxonomy
from inference.ml.train import TrainConfig, resolve_image_size, train

from .conftest import make_dataset


def test_estimate_minutes_adds_fine_members_and_coarse():
    # 600 photos: 2 members x 10 epochs at 100 img/s + 5 epochs at 50 img/s = 120 + 60 s
    m = budget.estimate_minutes(600, 10, 5, 2, 100.0, 50.0)
    assert m == pytest.approx(180 * budget.RUN_OVER_PROBE / 60)
    # a head probe of half an epoch per stage: 2 x 0.5 x 6 s + 0.5 x 12 s more
    m = budget.estimate_minutes(600, 10, 5, 2, 100.0, 50.0, probe_epochs=0.5)
    assert m == pytest.approx(192 * budget.RUN_OVER_PROBE / 60)


def test_step_speed_times_training_steps():
    ips = budget.step_speed(Classifier("tiny", 3), 32, 4, steps=2, warmup=1)
    assert 0 < ips < 1e6


def _tiny(size):
    return Classifier("tiny", 3)


def test_choose_image_size_largest_that_fits_else_smallest():
    size, info = budget.choose_image_size(_tiny, _tiny, 100, 2, 1, 1, 8, budget_minutes=1e6, sizes=(48, 32))
    assert size == 48 and info["chosen"] == 48 and len(info["probes"]) == 1
    assert info["probes"][0]["size"] == 48 and info["probes"][0]["estimated_minutes"] <= 1e6
    assert "48 px" in info["message"] and "budget 1e+06 min" in info["message"]
    size, info = budget.choose_image_size(_tiny, _tiny, 100, 2, 1, 1, 8, budget_minutes=0.0, sizes=(64, 48, 32))
    # each larger size throughout, then progressively from the smallest; the smallest alone is never probed
    assert size == 32 and [(p["size"], p.get("progressive_size")) for p in info["probes"]] == [
        (64, None),
        (64, 32),
        (48, None),
        (48, 32),
    ]
    assert info["progressive_size"] is None and "64 px from 32 px would take about" in info["message"]
    assert info["message"].startswith("image size 32 px: 64 px would take about")
    assert (
        info["reason"].startswith("32 px: 64 px would take about") and info["message"] == "image size " + info["reason"]
    )


def test_progressive_plan_when_the_larger_size_does_not_fit_throughout(monkeypatch):
    """100 photos, 3 fine epochs (2 of them at 32 px) + 1 coarse epoch: 48 px throughout takes
    4 epochs at 100 img/s, the progressive plan 2 at 1,000 img/s and 2 at 100 img/s."""
    monkeypatch.setattr(budget, "step_speed", lambda model, size, bs, cl=True: 100.0 if size == 48 else 1000.0)
    full = 100 * 4 / 100 * budget.RUN_OVER_PROBE / 60
    prog = 100 * (2 / 1000 + 1 / 100 + 1 / 100) * budget.RUN_OVER_PROBE / 60
    size, info = budget.choose_image_size(
        _tiny, _tiny, 100, 3, 1, 1, 8, budget_minutes=(full + prog) / 2, sizes=(48, 32)
    )
    assert size == 48 and info["progressive_size"] == 32
    assert info["probes"][0]["estimated_minutes"] == pytest.approx(full, abs=0.05)
    assert info["probes"][1]["estimated_minutes"] == pytest.approx(prog, abs=0.05)
    assert info["reason"].startswith("48 px, the first 2 of 3 fine epochs at 32 px: training estimated at")
    # without a progressive share only whole sizes are planned
    size, info = budget.choose_image_size(
        _tiny, _tiny, 100, 3, 1, 1, 8, budget_minutes=(full + prog) / 2, sizes=(48, 32), progressive_share=None
    )
    assert size == 32 and len(info["probes"]) == 1 and info["progressive_size"] is None
    assert budget.progressive_split(1, 2 / 3) == 0 and budget.progressive_split(2, 0.99) == 1


def test_unset_image_size_takes_a_progressive_plan_into_training(tmp_path, taxonomy_file, monkeypatch):
    """Fine model slow at 48 px, everything else fast: 48 px throughout does not fit the budget, 48 px
    with 9 of 10 fine epochs at 32 px does, and the run trains that way."""
    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))
    monkeypatch.setattr(
        budget,
        "step_speed",
        lambda model, size, bs, cl=True: (
            budget.RUN_OVER_PROBE / 60 if size == 48 and model.fc.out_features == 4 else 1e9
        ),
    )
    data = make_dataset(tmp_path / "data", n_per_class=6)
    # photos x epochs at 48 px = minutes: throughout 10 n, progressive n (n: 10-40 training photos)
    cfg = TrainConfig(
        data=str(data),
        taxonomy=str(taxonomy_file),
        out=str(tmp_path / "m"),
        backbone="tiny",
        pretrained=False,
        image_size=None,
        image_budget_minutes=50,
        epochs=10,
        coarse_epochs=1,
        progressive_share=0.9,
        batch_size=8,
        cache_dir="",
        threads=1,
    )
    man = json.loads((train(cfg) / "model.json").read_text())
    assert 10 <= man["training"]["image_size_choice"]["n_train"] <= 40
    assert man["training"]["image_size_choice"]["progressive_size"] == 32
    assert man["preprocessing"]["size"] == 48 and man["training"]["progressive_size"] == 32
    assert man["fine_training"]["progressive"] == {"size": 32, "epochs": 9}


def test_unset_image_size_is_chosen_recorded_and_kept_on_resume(tmp_path, taxonomy_file, monkeypatch):
    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))
    data = make_dataset(tmp_path / "data", n_per_class=6)
    events = []
    cfg = TrainConfig(
        data=str(data),
        taxonomy=str(taxonomy_file),
        out=str(tmp_path / "m"),
        backbone="tiny",
        pretrained=False,
        image_size=None,
        image_budget_minutes=1e6,
        epochs=1,
        coarse_epochs=1,
        batch_size=8,
        cache_dir="",
        threads=1,
    )
    out = train(cfg, progress=events.append)
    man = json.loads((out / "model.json").read_text())
    assert man["preprocessing"]["size"] == 48 and man["training"]["image_size"] == 48
    choice = man["training"]["image_size_choice"]
    assert choice["chosen"] == 48 and choice["probes"][0]["size"] == 48 and choice["n_train"] > 0
    assert any(
        e.get("event") == "probe" and e["message"] == "timing a few training steps at 48 px to choose the image size"
        for e in events
    )
    assert any(
        e.get("stage") == "image_size" and e.get("event") == "chosen" and "48 px" in e["message"] for e in events
    )
    # a run that resumes keeps the size its .work directory recorded, whatever the budget says now
    work = tmp_path / "w"
    work.mkdir()
    (work / "image_size.json").write_text(json.dumps({"chosen": 48, "message": "kept"}))
    kept = resolve_image_size(
        TrainConfig(data=str(data), taxonomy=str(taxonomy_file), out="", image_size=None, image_budget_minutes=0.0),
        None,
        work,
    )
    assert kept["chosen"] == 48
    # fine_from takes the reused model's size without a probe
    w2 = tmp_path / "w2"
    w2.mkdir()
    c2 = resolve_image_size(
        TrainConfig(data=str(data), taxonomy=str(taxonomy_file), out="", image_size=None, fine_from=str(out)), None, w2
    )
    assert c2 == {
        "chosen": 48,
        "from": "fine_from",
        "reason": "48 px, as the reused fine model",
        "message": "image size 48 px, as the reused fine model",
    }


@pytest.mark.parametrize("freeze", [False, True])
def test_probe_trains_the_coarse_model_as_the_run_will(tmp_path, taxonomy_file, monkeypatch, freeze):
    """With frozen transfer the coarse stage updates only the blocks after the cut; the probe times that."""
    trainable = []

    def speed(model, size, batch_size, channels_last=True):
        trainable.append(
            {
                n.split(".")[1] if n.startswith("backbone.") else n.split(".")[0]
                for n, p in model.named_parameters()
                if p.requires_grad
            }
        )
        return 100.0

    monkeypatch.setattr(budget, "step_speed", speed)
    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))
    data = make_dataset(tmp_path / "data", n_per_class=6)
    cfg = TrainConfig(
        data=str(data),
        taxonomy=str(taxonomy_file),
        out="",
        backbone="tiny",
        pretrained=False,
        image_size=None,
        freeze_transferred=freeze,
        freeze_blocks=1,
    )
    (tmp_path / "w").mkdir()
    assert resolve_image_size(cfg, Taxonomy.from_json(taxonomy_file), tmp_path / "w")["chosen"] == 48
    fine, coarse = trainable
    assert fine == {"blocks", "head", "fc"}  # stem and block 0 frozen (freeze_blocks=1)
    # tiny: 4 blocks, cut 3; frozen transfer leaves blocks 3.., the head and fc to train
    assert coarse == ({"blocks", "head", "fc"} if freeze else {"stem", "blocks", "head", "fc"})


def test_the_probe_leaves_the_runs_random_draws_as_they_were(tmp_path, taxonomy_file, monkeypatch):
    """A run whose size the probe chose trains the same model as the same run with that size set: the
    probe's timing steps (random photos, new networks) leave the generators the run was seeded with as
    they were (if they drew from them, the model would depend on how many probes ran)."""
    monkeypatch.setattr(budget, "AUTO_SIZES", (48, 32))
    data = make_dataset(tmp_path / "data", n_per_class=6)
    base = dict(
        data=str(data),
        taxonomy=str(taxonomy_file),
        backbone="tiny",
        pretrained=False,
        epochs=1,
        coarse_epochs=1,
        batch_size=8,
        cache_dir="",
        threads=1,
        image_budget_minutes=1e6,
    )
    probed = train(TrainConfig(out=str(tmp_path / "probed"), image_size=None, **base))
    set_ = train(TrainConfig(out=str(tmp_path / "set"), image_size=48, **base))
    assert json.loads((probed / "model.json").read_text())["training"]["image_size_choice"]["chosen"] == 48
    for name in (art.fine_file(0), "coarse.safetensors"):
        a, b = art.load_state(probed / name), art.load_state(set_ / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
