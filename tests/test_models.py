"""Model families: every family at every stem builds with exactly the widths of its config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metaprune import build_pruned, create_space, list_models
from metaprune.models.registry import STEMS
from metaprune.space import ChannelConfig, ChannelSpace

FAMILIES = list_models()


def configs(space: ChannelSpace) -> list[ChannelConfig]:
    rng = np.random.default_rng(0)
    return [space.max(), space.min(), space.sample(rng), space.sample(rng)]


def test_registry() -> None:
    assert set(FAMILIES) == {
        "cbm_mobilenet",
        "cbm_resnet",
        "mobilenet_v1",
        "mobilenet_v2",
        "resnet20",
        "resnet56",
        "resnet18",
        "resnet50",
    }


def check_widths(model: nn.Module, space: ChannelSpace, cfg: ChannelConfig) -> None:
    """Each conv/linear has the config's widths; depthwise convs have groups == in == out."""
    modules = dict(model.named_modules())
    widths = space.widths(cfg)
    by_gene: dict[str, set[int]] = {}
    for layer in space.arch.layers:
        cin, cout = cfg.channels()[layer.name]
        if layer.kind == "linear":
            m = modules[layer.name]
            assert isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (cin, cout)
        else:
            m = modules[f"{layer.name}.0"]
            assert isinstance(m, nn.Conv2d)
            assert (m.in_channels, m.out_channels) == (cin, cout)
            assert m.kernel_size == (layer.kernel,) * 2 and m.stride == (layer.stride,) * 2
            if layer.depthwise:
                assert m.groups == m.in_channels == m.out_channels
            else:
                assert m.groups == 1
            assert modules[f"{layer.name}.1"].num_features == cout
            if isinstance(layer.cout, str):
                by_gene.setdefault(layer.cout, set()).add(m.out_channels)
    # the layers sharing a gene share its width
    assert {g: {widths[g]} for g in by_gene} == by_gene


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", FAMILIES)
def test_builds_and_runs(name: str, stem: str, tiny_space) -> None:
    space = tiny_space(name, stem)
    x = torch.randn(2, *space.input_shape)
    for cfg in configs(space):
        model = build_pruned(space, cfg)
        check_widths(model, space, cfg)
        with torch.no_grad():
            out = model.eval()(x)  # runs: every residual add has equal channels
        assert out.shape == (2, space.num_classes)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", FAMILIES)
def test_stacked_network_runs_each_member_exactly(name: str, stem: str, tiny_space) -> None:
    """``stack=K``: K configs side by side in one grouped network (members zero-padded to the
    widest) give each member's own logits, after BN statistics recalibrated on batches in
    training mode (the padding must not leak into them); a member's block taken back out is
    its plain network."""
    from metaprune.engine.evaluate import recalibrate_bn
    from metaprune.models.pruned import PrunedNet, member_tensors, stack_tensors

    space = tiny_space(name, stem)
    members = configs(space)[1:]  # min and two samples: every gene padded somewhere
    torch.manual_seed(0)
    nets = [build_pruned(space, c) for c in members]
    widths = [space.widths(c) for c in members]
    wide = {g: max(w[g] for w in widths) for g in widths[0]}
    stacked = PrunedNet(space.arch, wide, init=False, stack=3)
    shapes = {k: v.shape for k, v in stacked.state_dict().items()}
    stacked.load_state_dict(stack_tensors([n.state_dict() for n in nets], shapes))
    x, recal = torch.randn(4, *space.input_shape), [(torch.randn(6, *space.input_shape), None)]
    for n in (*nets, stacked):
        recalibrate_bn(n, recal)
    with torch.no_grad():
        out = stacked(x)
        assert out.shape == (4, 3, space.num_classes)
        for j, net in enumerate(nets):
            torch.testing.assert_close(out[:, j], net(x), rtol=1e-4, atol=1e-5)
            back = build_pruned(space, members[j])
            own = {k: v.shape for k, v in back.state_dict().items()}
            back.load_state_dict(stack_tensors([member_tensors(stacked.state_dict(), 3, j)], own))
            torch.testing.assert_close(back.eval()(x), net(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stack must be >= 1"):
        PrunedNet(space.arch, wide, stack=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_state_dict_layout(name: str, tiny_space) -> None:
    """The key layout the PruningNet's generated state dicts follow."""
    space = tiny_space(name)
    cfg = space.sample(1)
    keys = set(build_pruned(space, cfg).state_dict())
    expected = {"classifier.weight", "classifier.bias"}
    for layer in space.arch.layers:
        if layer.kind == "conv":
            expected.add(f"{layer.name}.0.weight")
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                expected.add(f"{layer.name}.1.{k}")
    assert keys == expected


def test_stems_differ_in_resolution() -> None:
    """The cifar stem keeps the input resolution; the imagenet stem reduces it 4x (resnet)."""
    cifar = create_space("resnet18", stem="cifar", input_size=32).arch.layers
    imnet = create_space("resnet18", stem="imagenet", input_size=32).arch.layers
    assert cifar[0].out_hw == (32, 32) and cifar[1].in_hw == (32, 32)
    assert imnet[0].kernel == 7 and imnet[0].out_hw == (16, 16) and imnet[1].in_hw == (8, 8)
    mb = create_space("mobilenet_v2", stem="cifar", input_size=28).arch.layers
    assert mb[0].stride == 1 and mb[0].out_hw == (28, 28)


def test_width_mult_scales_maximum_widths() -> None:
    full = {g.name: g.max_channels for g in create_space("resnet50").genes}
    quarter = {g.name: g.max_channels for g in create_space("resnet50", width_mult=0.25).genes}
    assert all(quarter[g] == max(1, round(full[g] * 0.25)) for g in full)


@pytest.mark.parametrize(
    ("args", "opts", "match"),
    [
        (("resnet99",), {}, "unknown model family 'resnet99'"),
        (("resnet20",), {"blocks": 3}, r"unknown option\(s\) \['blocks'\]"),
        (("resnet20",), {"depth": 3}, "depth must be true or false"),
        (("resnet20",), {"stem": "tiny"}, "unknown stem 'tiny'"),
        (("resnet20",), {"width_mult": 0.0}, "width_mult must be positive"),
        (("resnet20",), {"in_chans": 0}, "in_chans must be at least 1"),
        (("resnet20",), {"num_classes": 0}, "num_classes and input_size must be positive"),
    ],
)
def test_create_space_bad_input(args: tuple, opts: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_space(*args, **opts)


def test_build_pruned_refuses_config_of_another_space() -> None:
    a = create_space("resnet20", width_mult=0.25)
    b = create_space("resnet20", width_mult=0.5)
    with pytest.raises(ValueError, match="belongs to space"):
        build_pruned(a, b.max())
