"""Depth genes (``space.depth=true``): spaces, costs, pruned networks, SSS block removal, refusals."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from typing import Any

import numpy as np
import pytest
import torch
from conftest import trained_like
from torch.utils.flop_counter import FlopCounterMode

from metaprune import build_pruned, count_flops, count_params, create_space, list_models
from metaprune.benchmarks import check_benchmark_space
from metaprune.benchmarks.quality import recipe
from metaprune.cost import cost_model
from metaprune.cost.latency.table import needed_entries
from metaprune.cost.proposal import propose
from metaprune.export import check_exports, export_model, read_pruned
from metaprune.models import space_from_description
from metaprune.prune import PruneConfig, allocate, prune_label, prune_network
from metaprune.prune.channels import drop_removed
from metaprune.prune.criteria.sss import DeadNetworkError
from metaprune.prune.job import prune_identity
from metaprune.pruningnet import PruningNet
from metaprune.schema import load_config
from metaprune.search import uniform_baseline
from metaprune.search.config import SearchConfig
from metaprune.search.evolution import Evolution
from metaprune.space import ChannelSpace, DepthSpaceError

# fingerprints of these spaces before depth genes existed (trained PruningNets carry them)
BEFORE = {
    "resnet20": "c87d687080f0029c",
    "resnet56": "3e04e02828298b45",
    "mobilenet_v2": "0fd378f5aa6f1efd",
    "cbm_mobilenet": "fef2a8a2ddbe60be",
}
DEPTH_FAMILIES = [n for n in list_models() if create_space(n).arch.removable]


def tiny(name: str, depth: bool = True, **kw):
    opts = dict(width_mult=0.125, num_classes=5, input_size=8, in_chans=3)
    return create_space(name, depth=depth, **{**opts, **kw})


def random_off(space, rng):
    """A random config with about half of the removable blocks off (at least one)."""
    off = [d for d in space.depth_blocks if rng.random() < 0.5] or [next(iter(space.depth_blocks))]
    return space.remove_blocks(space.sample(rng), off)


def torch_macs(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return counter.get_total_flops() // 2


def test_without_depth_spaces_are_as_before():
    for name, fp in BEFORE.items():
        off, on = create_space(name), create_space(name, depth=True)
        assert off.fingerprint == fp and not off.depth_blocks and "depth" not in off.describe()
        assert on.width_space.fingerprint == fp and on.fingerprint != fp
        assert [g.name for g in on.width_space.genes] == [g.name for g in off.genes]
        assert [g.name for g in on.genes[: len(off.genes)]] == [g.name for g in off.genes]
        assert all(g.choices == (0, 1) for g in on.genes[len(off.genes) :])
    # samples, mutations and their costs: the same random streams as before depth genes
    s = create_space("resnet20")
    cs = [s.sample(0), s.sample_spread(1), s.mutate(s.uniform(0.49), 0.3, 2)]
    cs += [s.mutate(s.max(), 0.0, 3), s.crossover(s.min(), s.max(), 4)]
    blob = [[list(c.indices) for c in cs], [count_flops(s, c) for c in cs]]
    blob.append([count_params(s, c) for c in cs])
    assert hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:16] == "e8f7d19ac9e03f00"


def test_depth_genes_name_the_removable_blocks_and_configs_round_trip():
    space = tiny("resnet20")
    # identity-shortcut blocks only: the first block of stages 2 and 3 has a conv shortcut
    assert space.depth_blocks == {
        "s1.b0.depth": 1,
        "s1.b1.depth": 2,
        "s1.b2.depth": 3,
        "s2.b1.depth": 5,
        "s2.b2.depth": 6,
        "s3.b1.depth": 8,
        "s3.b2.depth": 9,
    }
    rng = np.random.default_rng(0)
    for config in [space.max(), space.min(), random_off(space, rng), space.sample(rng)]:
        assert space.from_json(config.to_json()) == config
        assert space.from_json(json.loads(config.to_json())) == config
    config = space.remove_blocks(space.max(), ["s2.b1.depth"])
    w = config.widths()
    assert w["s2.b1.depth"] == 0 and w["s2.b1.mid"] == 0 and w["s2.b2.depth"] == 1
    assert space.removed(config) == {"s2.b1.depth": 5}
    assert not any(name.startswith("features.5.") for name in config.channels())
    # the inner width of a removed block does not matter: one network, one width tuple
    k = space.gene_index["s2.b1.mid"]
    other = space.config(
        [len(space.ratios) - 1 if i == k else v for i, v in enumerate(config.indices)]
    )
    assert other != config and other.width_tuple() == config.width_tuple()
    assert all(c.indices[-7:] == (1,) * 7 for c in [space.uniform(0.49), space.max()])
    rebuilt = space_from_description(space.describe(), expected=space)
    assert rebuilt.fingerprint == space.fingerprint and rebuilt.depth_blocks == space.depth_blocks


def test_depth_space_bad_input():
    with pytest.raises(ValueError, match="mobilenet_v1 has no removable block"):
        create_space("mobilenet_v1", depth=True)
    space = tiny("resnet20")
    with pytest.raises(ValueError, match=r"'s2\.b0\.depth' is no depth gene"):
        space.remove_blocks(space.max(), ["s2.b0.depth"])
    with pytest.raises(ValueError, match=r"choice index 2 out of range \[0, 2\)"):
        space.config([0] * (len(space) - 1) + [2])
    with pytest.raises(ValueError, match="belongs to space"):
        tiny("resnet20", depth=False).check(space.max())


@pytest.mark.parametrize("name", DEPTH_FAMILIES)
def test_costs_are_exact_with_blocks_removed(name):
    space = tiny(name)
    rng = np.random.default_rng(1)
    configs = [space.min(), *(random_off(space, rng) for _ in range(3))]
    for config in configs:
        model = build_pruned(space, config)
        assert count_params(space, config) == sum(p.numel() for p in model.parameters())
        assert count_flops(space, config) == torch_macs(model, space.input_shape)
        for i in space.removed(config).values():
            assert len(model.features[i].body) == 0
    cm = cost_model(space)
    assert cm.flops_many(configs).tolist() == [count_flops(space, c) for c in configs]
    assert cm.params_many(configs).tolist() == [count_params(space, c) for c in configs]
    full = space.max()
    assert count_flops(space, full) == count_flops(space.width_space, space.width_space.max())


@pytest.mark.parametrize(
    ("name", "width"), [("resnet20", 0.125), ("cbm_mobilenet", 1 / 32), ("cbm_resnet", 1 / 16)]
)
def test_a_removed_block_equals_the_full_network_with_the_body_zeroed(name, width):
    space = tiny(name, width_mult=width)
    block_gene = list(space.depth_blocks)[1]
    i = space.depth_blocks[block_gene]
    full = trained_like(build_pruned(space, space.max()))
    config = space.remove_blocks(space.max(), [block_gene])
    pruned = build_pruned(space, config).eval()
    pruned.load_state_dict(drop_removed(space, config, full.state_dict()), strict=True)
    last_bn = full.features[i].body[-1][1]
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(pruned(x), full(x), atol=1e-4)
        last_bn.weight.zero_()
        last_bn.bias.zero_()
        assert torch.allclose(pruned(x), full(x), atol=1e-5)
    pruned.train()(x).square().sum().backward()  # no in-place op on what autograd keeps
    assert all(p.grad is not None for p in pruned.parameters())


def test_a_network_with_blocks_removed_exports(tmp_path):
    space = tiny("resnet20", input_size=12)
    config = random_off(space, np.random.default_rng(2))
    model = trained_like(build_pruned(space, config))
    paths = export_model(model, space, config, tmp_path / "e")
    x = torch.randn(2, 3, 12, 12)
    assert set(check_exports(paths, model, x)) == {"torchscript", "export", "onnx"}
    back = read_pruned(paths["pruned"])
    assert back.config == config and back.space.fingerprint == space.fingerprint


def _dead_block_network(space, block: int):
    """A full-width ResNet whose block ``block`` has a dead body, and batches it classifies
    confidently (so the factors that matter stay)."""
    torch.manual_seed(0)
    model = trained_like(build_pruned(space, space.max()))
    bn = model.features[block].body[-1][1]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
        x = torch.randn(64, 3, 8, 8)
        own = itertools.cycle([(x, model(x).argmax(1))])
    return model, own


SSS = {"steps": 30, "gamma": 0.02, "factor_lr": 1.0, "lr": 1e-4, "momentum": 0.5}


def test_sss_removes_a_dead_block_and_spends_its_flops_on_the_other_genes(tmp_path):
    space = tiny("resnet20", width_mult=0.25)
    pcfg = PruneConfig(criterion="sss", options=SSS, target=0.5)
    model, own = _dead_block_network(space, 5)
    config, state, summary = prune_network(model, space, pcfg, own)
    assert summary["removed_blocks"] == ["s2.b1.depth"]
    assert summary["kept"]["s2.b1.mid"] == [] and summary["kept"]["s2.b2.mid"]
    assert space.removed(config) == {"s2.b1.depth": 5}
    assert count_flops(space, config) <= 0.5 * count_flops(space, space.max())
    pruned = build_pruned(space, config).eval()
    pruned.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert pruned(x).shape == (2, 5) and len(pruned.features[5].body) == 0
    paths = export_model(pruned, space, config, tmp_path / "e", formats=["torchscript"])
    check_exports(paths, pruned, x)
    # the same scores on the space without depth genes: the dead block stays at its smallest
    # width and costs budget there, so the greedy loop stops no earlier; with the block removed
    # every other gene keeps at least as many channels (how many more depends on where the
    # steps fall: on one CPU's scores one more, on another's none)
    twin = space.width_space
    model, own = _dead_block_network(space, 5)
    wconfig, _, wsummary = prune_network(model, twin, pcfg, own)
    assert "removed_blocks" not in wsummary and wsummary["scores"] == summary["scores"]
    mine, theirs = space.widths(config), twin.widths(wconfig)
    assert theirs["s2.b1.mid"] == twin.widths(twin.min())["s2.b1.mid"]
    assert all(mine[g.name] >= theirs[g.name] for g in twin.genes if g.name != "s2.b1.mid")
    assert count_flops(space, config) <= 0.5 * count_flops(twin, twin.max())


def _tiny_trained_resnet() -> tuple[ChannelSpace, torch.nn.Module, Any]:
    """A tiny ResNet-20 space, its full network with trained-like BNs, and one batch of random
    labels repeated."""
    space = tiny("resnet20", width_mult=0.25)
    torch.manual_seed(0)
    model = trained_like(build_pruned(space, space.max()))
    x = torch.randn(32, 3, 8, 8)
    own = itertools.cycle([(x, torch.randint(5, (32,)))])
    return space, model, own


def test_sss_with_nothing_dead_removes_nothing_and_allocation_keeps_the_depth():
    space, model, own = _tiny_trained_resnet()
    pcfg = PruneConfig(criterion="sss", options={**SSS, "gamma": 0.0}, target=0.6)
    config, _, summary = prune_network(model, space, pcfg, own)
    assert summary["removed_blocks"] == [] and not space.removed(config)
    # allocation from a start with blocks off keeps them off and meets the budget
    scores = {g.name: torch.rand(g.max_channels) for g in space.width_space.genes}
    start = space.remove_blocks(space.max(), ["s1.b0.depth", "s3.b2.depth"])
    budget = 0.4 * count_flops(space, space.max())
    out = allocate(space, scores, budget, "flops", start=start)
    assert space.removed(out) == space.removed(start) and count_flops(space, out) <= budget
    mem = allocate(space, scores, budget, "flops", normalise="memory", start=start)
    assert space.removed(mem) == space.removed(start)
    with pytest.raises(ValueError, match="below the smallest configuration"):
        allocate(space, scores, 1.0, "flops", start=start)


def test_code_for_width_genes_only_refuses_a_depth_space(tmp_path):
    space = tiny("resnet20")
    with pytest.raises(DepthSpaceError, match="the PruningNet handles width genes only"):
        PruningNet(space)
    with pytest.raises(DepthSpaceError, match="the search"):
        Evolution(space, None, {}, SearchConfig(), tmp_path)
    with pytest.raises(DepthSpaceError, match="a latency table"):
        needed_entries(space)
    with pytest.raises(DepthSpaceError, match="cost-targeted proposals"):
        propose(space, lambda c: 0.0, (None, None), np.random.default_rng(0), 1)
    with pytest.raises(DepthSpaceError, match="uniform baselines"):
        uniform_baseline(space, [])
    with pytest.raises(DepthSpaceError, match="ratios"):
        space.max().ratios()
    cbm = create_space("cbm_mobilenet", depth=True)
    with pytest.raises(DepthSpaceError, match="Channel-Bench-Macro"):
        check_benchmark_space(cbm)
    assert issubclass(DepthSpaceError, ValueError)


def test_space_depth_key_changes_no_identity_at_its_default(tmp_path):
    tiny_cfg = ["experiment=tiny", "prune.target=0.5", "prune.from=x"]
    off, on = load_config(tiny_cfg), load_config([*tiny_cfg, "space.depth=true"])
    assert off.space.depth is False and on.space.depth is True
    assert recipe(off)["space"] == {"choices": list(off.space.choices)}
    assert recipe(on)["space"]["depth"] is True
    (tmp_path / "src.pt").write_bytes(b"x")
    ids = [prune_identity(c, PruneConfig.from_any(c.prune), tmp_path / "src.pt") for c in (off, on)]
    assert "depth" not in ids[0] and ids[1] == {**ids[0], "depth": True}
    assert (prune_label(off), prune_label(on)) == ("l1-flops0.5", "l1-flops0.5-depth")


def test_sss_refuses_a_sparsity_that_zeroes_a_stage_and_block_gamma_selects_blocks_alone():
    space, model, own = _tiny_trained_resnet()
    # a threshold above every factor: the stages' channels die too, the network would be constant
    kill = {**SSS, "steps": 2, "gamma": 50.0}
    with pytest.raises(DeadNetworkError, match=r"stage1"):
        prune_network(
            copy.deepcopy(model), space, PruneConfig(criterion="sss", options=kill, target=0.5), own
        )
    # the same threshold on the blocks only: every removable block goes, the channels stay
    blocks = {**kill, "gamma": 0.0, "block_gamma": 50.0}
    pcfg = PruneConfig(criterion="sss", options=blocks, target=0.5)
    config, _, summary = prune_network(copy.deepcopy(model), space, pcfg, own)
    assert summary["removed_blocks"] == list(space.depth_blocks)
    assert count_flops(space, config) <= 0.5 * count_flops(space, space.max())
