"""The analytic cost model equals torch's FLOP counter and parameter count exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from metaprune import build_pruned, count_flops, count_params, create_space, list_models
from metaprune.cost import cost_model
from metaprune.models.registry import STEMS


def torch_macs(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", list_models())
def test_exact_against_torch(name: str, stem: str, tiny_space) -> None:
    space = tiny_space(name, stem, in_chans=3 if stem == "cifar" else 1)
    rng = np.random.default_rng(1)
    for cfg in [space.max(), space.min(), space.sample(rng), space.sample(rng)]:
        model = build_pruned(space, cfg)
        assert count_params(space, cfg) == sum(p.numel() for p in model.parameters())
        assert count_flops(space, cfg) == torch_macs(model, space.input_shape)


# (MACs, params) of the unpruned networks at their default stem and input, as published
# (MobileNetV2 300.77M / 3.50M, ResNet-50 4.09G / 25.56M, ResNet-18 1.81G / 11.69M)
FULL_SIZE = {
    "mobilenet_v1": (568_740_352, 4_231_976),
    "mobilenet_v2": (300_774_272, 3_504_872),
    "resnet18": (1_814_073_344, 11_689_512),
    "resnet50": (4_089_184_256, 25_557_032),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_values(name: str) -> None:
    space = create_space(name)
    assert (count_flops(space, space.max()), count_params(space, space.max())) == FULL_SIZE[name]


def test_costs_grow_with_width() -> None:
    space = create_space("mobilenet_v2", stem="cifar")
    ratios = space.ratios
    flops = [count_flops(space, space.uniform(r)) for r in ratios]
    params = [count_params(space, space.uniform(r)) for r in ratios]
    assert flops == sorted(flops) and len(set(flops)) == len(ratios)
    assert params == sorted(params) and len(set(params)) == len(ratios)
    # MACs of a 1x1 conv scale with both widths: halving every width roughly quarters them
    assert 0.2 < flops[ratios.index(0.49)] / flops[-1] < 0.3


@pytest.mark.parametrize("name", list_models())
def test_many_equals_single(name: str) -> None:
    space = create_space(name, stem="cifar", input_size=28, in_chans=1)
    model = cost_model(space)
    cfgs = [space.sample(s) for s in range(40)] + [space.max(), space.min()]
    flops, params = model.flops_many(cfgs), model.params_many(cfgs)
    assert flops.dtype == params.dtype == np.int64 and flops.shape == params.shape == (42,)
    assert flops.tolist() == [count_flops(space, c) for c in cfgs]
    assert params.tolist() == [count_params(space, c) for c in cfgs]
    assert model.flops_many([]).shape == (0,)
    assert cost_model(space) is model


def test_input_size_changes_flops_not_params() -> None:
    a = create_space("resnet20", input_size=32)
    b = create_space("resnet20", input_size=16)
    cfg_a, cfg_b = a.sample(0), b.config(a.sample(0).indices)
    assert count_params(a, cfg_a) == count_params(b, cfg_b)
    assert count_flops(a, cfg_a) > 3 * count_flops(b, cfg_b)


def test_config_of_another_space_is_refused() -> None:
    a = create_space("resnet20")
    b = create_space("resnet20", num_classes=100)
    for fn in (count_flops, count_params, lambda s, c: cost_model(s).flops_many([c])):
        with pytest.raises(ValueError, match="belongs to space"):
            fn(a, b.max())
