import pytest
import torch

from inference.ml.networks import GRADCAM_LAYER, Classifier, default_cut, parse_cut, transfer_cut
from inference.ml.weights import (
    EXPECTED_TENSORS,
    WeightMappingError,
    imagenet_state_path,
    load_imagenet_lite0,
    load_source_state,
    map_lite0_state,
)


def test_imagenet_mapping_all_shapes_in_order():
    p = imagenet_state_path()
    assert p.name == "efficientnet-lite0-57934424.pth"
    m = Classifier("efficientnet_lite0", 1000)
    rep = load_imagenet_lite0(m, include_classifier=True)
    assert rep["tensors"] == EXPECTED_TENSORS == 296
    src = load_source_state()
    sd = m.state_dict()
    for (sk, tk, shape), (k2, v2) in zip(rep["pairs"], src.items()):
        assert sk == k2 and tuple(sd[tk].shape) == shape == tuple(v2.shape)
        assert torch.equal(sd[tk], v2)
    assert rep["pairs"][0][1] == "backbone.stem.conv.weight"
    assert rep["pairs"][-1][1] == "fc.bias"
    assert len(m.backbone.blocks) == 16
    assert sum(1 for b in m.backbone.blocks if b.expand is None) == 1


@pytest.mark.parametrize("backbone,blocks,last", [("efficientnet_lite1", 21, 320), ("efficientnet_lite2", 21, 352)])
def test_lite1_and_lite2_map_every_tensor_of_their_wheels_in_order(backbone, blocks, last):
    from inference.ml.weights import CHECKPOINTS, load_imagenet

    m = Classifier(backbone, 1000)
    rep = load_imagenet(m, include_classifier=True)
    assert rep["tensors"] == CHECKPOINTS[backbone][2] == 386
    src = load_source_state(backbone)
    sd = m.state_dict()
    for (sk, tk, _shape), (k2, v2) in zip(rep["pairs"], src.items()):
        assert sk == k2 and torch.equal(sd[tk], v2)
    assert len(m.backbone.blocks) == blocks and m.backbone.blocks[-1].project.conv.out_channels == last
    # a fine-tuning model gets the backbone and keeps its own head
    c = Classifier(backbone, 7)
    assert load_imagenet(c)["loaded"] == 384 and c.fc.weight.shape == (7, 1280)
    with pytest.raises(WeightMappingError, match="no ImageNet weights for backbone 'tiny'"):
        imagenet_state_path("tiny")


def test_mapping_fails_loudly_on_mismatch():
    src = load_source_state()
    m = Classifier("efficientnet_lite0", 1000)
    keys = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    keys[10] = (keys[10][0], (7, 7))
    with pytest.raises(WeightMappingError, match="shape mismatch at tensor #10"):
        map_lite0_state(keys, src)
    with pytest.raises(WeightMappingError, match="count"):
        map_lite0_state(keys[:-1], src)


def test_transfer_cut_and_gradcam_layer():
    torch.manual_seed(0)
    fine, coarse = Classifier("tiny", 4), Classifier("tiny", 2)
    before = {k: v.clone() for k, v in coarse.state_dict().items()}
    k = default_cut(fine)
    assert k == round(fine.num_blocks * 2 / 3)
    copied = transfer_cut(coarse, fine, 2)
    sd = coarse.state_dict()
    assert all(k.startswith(("backbone.stem.", "backbone.blocks.0.", "backbone.blocks.1.")) for k in copied)
    assert torch.equal(sd["backbone.blocks.1.dw.conv.weight"], fine.state_dict()["backbone.blocks.1.dw.conv.weight"])
    assert torch.equal(sd["backbone.blocks.2.dw.conv.weight"], before["backbone.blocks.2.dw.conv.weight"])
    assert torch.equal(sd["fc.weight"], before["fc.weight"])
    assert transfer_cut(Classifier("tiny", 2), fine, "none") == []
    assert any(k.startswith("backbone.head") for k in transfer_cut(Classifier("tiny", 2), fine, "all"))
    with pytest.raises(ValueError):
        parse_cut(99, fine)
    assert isinstance(fine.get_submodule(GRADCAM_LAYER), torch.nn.Module)
    assert fine(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_thread_tuner_picks_faster_setting(monkeypatch):
    from inference.ml import infer

    tuner = infer.ThreadTuner(max_threads=2, period=10, trial=2)
    clock = {"t": 0.0}
    monkeypatch.setattr(tuner, "_time", lambda: clock["t"])
    for _ in range(40):
        tuner.begin()
        clock["t"] += 1.0 if torch.get_num_threads() == 1 else 3.0  # 1 thread is faster here
        tuner.end()
    assert tuner.threads == 1
    clock2 = {"t": 0.0}
    t2 = infer.ThreadTuner(max_threads=2, period=10, trial=2)
    monkeypatch.setattr(t2, "_time", lambda: clock2["t"])
    for _ in range(40):
        t2.begin()
        clock2["t"] += 3.0 if torch.get_num_threads() == 1 else 1.0
        t2.end()
    assert t2.threads == 2


def test_shared_depth_and_the_pair_that_computes_it_once():
    from inference.ml.networks import SharedTrunkPair, shared_depth

    torch.manual_seed(0)
    fine, coarse = Classifier("tiny", 5).eval(), Classifier("tiny", 2).eval()
    assert shared_depth(fine, coarse) == 0  # different random stems
    transfer_cut(coarse, fine, 2)
    assert shared_depth(fine, coarse) == 3  # stem + blocks 0 and 1
    with torch.no_grad():
        coarse.backbone.blocks[1].dw.bn.running_mean += 1e-6  # one buffer differs: block 1 is not shared
    assert shared_depth(fine, coarse) == 2
    assert shared_depth(fine, Classifier("efficientnet_lite0", 2)) == 0
    pair = SharedTrunkPair(fine, coarse, 2)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        lf, f, lc = pair(x)
        torch.testing.assert_close(lf, fine(x))
        torch.testing.assert_close(f, fine.features(x))
        torch.testing.assert_close(lc, coarse(x))
    with pytest.raises(ValueError, match="shared depth must be between 1 and 5, not 0"):
        SharedTrunkPair(fine, coarse, 0)


def test_trunk_prefixes_name_the_leading_trunk_modules():
    """Freezing, transfer and shared serving agree on what "stem + first n blocks" is."""
    from inference.ml.networks import freeze_first_blocks, trunk, trunk_prefixes

    model = Classifier("tiny", 3)
    names = {id(m): n for n, m in model.named_modules()}
    for n in range(model.num_blocks + 1):
        assert trunk_prefixes(model, n) == [names[id(m)] + "." for m in trunk(model)[: n + 1]]
    assert freeze_first_blocks(model, 2) == trunk_prefixes(model, 2)
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(k.startswith(tuple(trunk_prefixes(model, 2))) for k in frozen)
    assert not any(k.startswith("backbone.blocks.2.") for k in frozen)


def test_stochastic_depth_rises_with_depth_keeps_the_expectation_and_spares_eval_and_frozen_blocks():
    """drop_path_rate r: block i of n skips its residual branch with probability r * i / (n - 1)
    (blocks without a skip never drop); the kept branch is scaled so the mean output is unchanged;
    in eval mode, and in a block put in eval mode because it is frozen, nothing is dropped."""
    from inference.ml.networks import EfficientNetLite, MBConv

    stages = [(3, 1, 1, 8, 2), (3, 2, 2, 16, 2)]  # blocks 0, 1, 3 have a skip; block 2 halves the size
    net = EfficientNetLite(stages, stem=8, head=16, drop_path_rate=0.3)
    assert [b.drop_path for b in net.blocks] == pytest.approx([0.0, 0.1, 0.0, 0.3])
    assert [b.has_skip for b in net.blocks] == [True, True, False, True]
    assert all(b.drop_path == 0.0 for b in EfficientNetLite(stages, stem=8, head=16).blocks)

    torch.manual_seed(0)
    block = MBConv(8, 8, 3, 1, 2, drop_path=0.5)
    plain = MBConv(8, 8, 3, 1, 2)
    plain.load_state_dict(block.state_dict())
    x = torch.randn(4000, 8, 4, 4)
    block.train(), plain.train()
    a, b = block(x), plain(x)
    branch = b - x  # BatchNorm on batch statistics: same in both
    kept = (a - x).abs().flatten(1).amax(1) > 0
    assert 0.45 < kept.float().mean() < 0.55  # about half the photos keep the branch
    assert torch.allclose((a - x)[kept], 2 * branch[kept], atol=1e-5)
    assert torch.allclose(a.mean(0), b.mean(0), atol=0.05)
    assert not torch.equal(block(x), a)  # a new draw at every step
    block.eval(), plain.eval()
    plain.load_state_dict(block.state_dict())  # the same running statistics
    assert torch.equal(block(x), plain(x))
    block.train()
    net.train()
    net.blocks[3].eval()  # a frozen block: fine-tuning keeps it in eval mode
    y = torch.randn(2, 16, 4, 4)
    assert torch.equal(net.blocks[3](y), net.blocks[3](y))

    with pytest.raises(ValueError, match="drop_path_rate"):
        Classifier("tiny", 3, drop_path_rate=1.0)
