"""ChannelSpace / ChannelConfig: choices, gene layouts, sampling, operators, JSON, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest

from metaprune import create_space, list_models
from metaprune.config import build_space
from metaprune.models.registry import (
    STEMS,
    SpaceMismatchError,
    default_choices,
    space_from_description,
)
from metaprune.space import DEFAULT_RATIOS, ChannelConfig


def test_default_ratios_are_the_papers_31() -> None:
    assert len(DEFAULT_RATIOS) == 31
    assert DEFAULT_RATIOS[0] == 0.10 and DEFAULT_RATIOS[-1] == 1.00
    assert np.allclose(np.diff(DEFAULT_RATIOS), 0.03)


@pytest.mark.parametrize("name", list_models())
def test_gene_choices_are_rounded_ratios_of_the_maximum(name: str) -> None:
    space = create_space(name)
    assert space.ratios == default_choices(name)
    for g in space.genes:
        assert g.choices == tuple(max(1, round(r * g.max_channels)) for r in space.ratios)
        assert g.choices[-1] == g.max_channels
    assert space.widths(space.max()) == {g.name: g.max_channels for g in space.genes}


# (number of genes, the genes expected among them) per family, as in MetaPruning's encodings
LAYOUT = {
    # stem + one gene per pointwise output
    "mobilenet_v1": (14, {"stem", "pw1", "pw13"}),
    # stem + 7 stage outputs + 16 expanded widths (17 blocks, the first has no expansion) + last
    "mobilenet_v2": (25, {"stem", "stage1", "stage7", "s2.b0.mid", "s6.b2.mid", "last"}),
    # 3 stage outputs (the stem tied to stage1) + 9 block inner widths
    "resnet20": (12, {"stage1", "stage3", "s1.b0.mid", "s3.b2.mid"}),
    "resnet56": (30, {"stage1", "stage3", "s3.b8.mid"}),
    "resnet18": (12, {"stage1", "stage4", "s4.b1.mid"}),
    # stem + 4 stage outputs + 2 inner widths for each of 16 bottlenecks
    "resnet50": (37, {"stem", "stage4", "s1.b0.mid", "s4.b2.mid2"}),
    # the benchmark's c0..c6: 2 stage outputs, 4 expanded widths, the head (Channel-Bench-Macro)
    "cbm_mobilenet": (7, {"stage1", "stage2", "s1.b0.mid", "s2.b1.mid", "last"}),
    "cbm_resnet": (7, {"stage1", "stage2", "s1.b0.mid", "s2.b2.mid"}),
}


@pytest.mark.parametrize("name", list_models())
def test_gene_layout_as_in_metapruning(name: str) -> None:
    space = create_space(name)
    count, some = LAYOUT[name]
    names = [g.name for g in space.genes]
    assert len(names) == count == len(set(names))
    assert some <= set(names)
    maxw = {g.name: g.max_channels for g in space.genes}
    if name == "mobilenet_v2":
        assert maxw["s2.b0.mid"] == 6 * 16 and maxw["last"] == 1280
    if name == "resnet50":
        assert maxw["stage1"] == 256 and maxw["s1.b0.mid"] == maxw["s1.b0.mid2"] == 64


@pytest.mark.parametrize("name", list_models())
def test_coupling_in_the_architecture(name: str) -> None:
    """Depthwise convs keep their input gene; identity residuals add equal genes."""
    arch = create_space(name).arch
    for layer in arch.layers:
        if layer.depthwise:
            assert layer.cin == layer.cout and isinstance(layer.cin, str)
    for block in arch.blocks:
        if block.residual and block.shortcut is None:
            assert block.body[0].cin == block.body[-1].cout
        if block.shortcut is not None:
            assert block.shortcut.cin == block.body[0].cin
            assert block.shortcut.cout == block.body[-1].cout


def test_choices_are_configurable() -> None:
    space = create_space("resnet20", choices=[0.25, 0.5, 1.0])
    assert space.ratios == (0.25, 0.5, 1.0)
    assert all(len(g.choices) == 3 for g in space.genes)
    assert space.widths(space.uniform(0.5))["stage3"] == 32
    assert space.sample(0).ratios()[0] in (0.25, 0.5, 1.0)
    assert space.fingerprint != create_space("resnet20").fingerprint
    with pytest.raises(ValueError, match=r"0.1"):
        space.uniform(0.1)
    # through the Hydra config groups
    cfg_space = build_space({"name": "resnet20"}, {"choices": [0.25, 0.5, 1.0]})
    assert cfg_space.fingerprint == space.fingerprint


@pytest.mark.parametrize("choices", [[], [0.0, 1.0], [0.5, 1.5], [0.5, 0.25], [0.5, 0.5, 1.0]])
def test_bad_choices_raise(choices: list[float]) -> None:
    with pytest.raises(ValueError, match="choices"):
        create_space("resnet20", choices=choices)


def test_uniform_max_min() -> None:
    space = create_space("mobilenet_v2")
    assert space.uniform(1.0) == space.max()
    assert space.uniform(0.1) == space.min()
    half = space.uniform(0.55)
    assert set(half.ratios()) == {0.55}
    assert space.widths(half)["stage7"] == round(0.55 * 320)
    with pytest.raises(ValueError, match=r"0.5 is not a choice"):
        space.uniform(0.5)
    assert space.uniform(0.5, nearest=True).ratios()[0] in (0.49, 0.52)
    with pytest.raises(ValueError, match="outside"):
        space.uniform(1.5, nearest=True)


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("name", list_models())
def test_input_shape_and_classes(name: str, stem: str) -> None:
    default = create_space(name, stem=stem)
    size = 32 if stem == "cifar" else 224
    assert default.input_shape == (3, size, size)
    assert default.num_classes == (10 if stem == "cifar" else 1000)
    small = create_space(name, stem=stem, in_chans=1, input_size=28, num_classes=5)
    assert small.input_shape == (1, 28, 28) and small.num_classes == 5


def test_sample_is_seeded_and_uniform() -> None:
    space = create_space("mobilenet_v2")
    assert space.sample(3) == space.sample(3)
    assert space.sample(np.random.default_rng(3)) == space.sample(3)
    assert len({space.sample(s) for s in range(50)}) == 50
    rng = np.random.default_rng(0)
    draws = np.array([space.sample(rng).indices for _ in range(1000)])  # 25k draws
    counts = np.bincount(draws.ravel(), minlength=31)
    expected = draws.size / 31
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected
    # every gene independently covers the whole range
    assert all(len(set(draws[:, g])) == 31 for g in range(draws.shape[1]))


def test_sample_spread_covers_the_cost_range() -> None:
    from metaprune.cost import cost_model

    space = create_space("mobilenet_v2")
    flops = cost_model(space).flops_many
    rng = np.random.default_rng(0)
    spread = flops([space.sample_spread(rng) for _ in range(200)]) / flops([space.max()])[0]
    plain = flops([space.sample(rng) for _ in range(200)]) / flops([space.max()])[0]
    assert plain.min() > 0.1 and plain.max() < 0.6  # uniform genes: around the mean
    assert spread.min() < 0.05 and spread.max() > 0.8  # spread: from near-min to near-max
    for _ in range(20):  # every gene within the window around a common level
        idx = np.array(space.sample_spread(rng, window=0.25).indices)
        assert idx.max() - idx.min() <= round(0.25 * 31 / 2) * 2
    assert len(set(space.sample_spread(rng, window=0.0).indices)) == 1
    with pytest.raises(ValueError, match="window"):
        space.sample_spread(rng, window=1.5)


def n_changed(a: ChannelConfig, b: ChannelConfig) -> int:
    return sum(x != y for x, y in zip(a.indices, b.indices, strict=True))


def test_mutate() -> None:
    space = create_space("resnet56")
    parent = space.sample(1)
    assert space.mutate(parent, 0.0, 0) == parent
    assert space.mutate(parent, 0.3, 5) == space.mutate(parent, 0.3, 5)
    changed = [n_changed(parent, space.mutate(parent, 1.0, s)) for s in range(20)]
    # each gene is redrawn: it changes with probability 30/31
    assert np.mean(changed) > 0.85 * len(space)
    low = np.mean([n_changed(parent, space.mutate(parent, 0.1, s)) for s in range(50)])
    assert 0.5 < low < 6.0
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            space.mutate(parent, p, 0)


def test_crossover_takes_each_gene_from_a_parent() -> None:
    space = create_space("mobilenet_v1")
    a, b = space.sample(1), space.sample(2)
    for seed in range(10):
        child = space.crossover(a, b, seed)
        assert all(c in (x, y) for c, x, y in zip(child.indices, a.indices, b.indices, strict=True))
    mixed = space.crossover(space.min(), space.max(), 0)
    assert set(mixed.indices) == {0, 30}
    assert space.crossover(a, a, 0) == a


def test_config_value_semantics() -> None:
    space = create_space("resnet20")
    a = space.config([3] * len(space))
    b = space.config(np.full(len(space), 3))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != space.config([4] * len(space))
    assert {a: 1}[b] == 1
    # an identically built space gives equal configs; another space does not
    twin = create_space("resnet20")
    assert twin.config(a.indices) == a
    other = create_space("resnet20", num_classes=5)
    assert other.config(a.indices) != a
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.indices = (0,) * len(space)  # type: ignore[misc]
    assert a.width_tuple() == tuple(space.widths(a).values())
    # immutable: copies are the value itself (DEAP clones with deepcopy); pickling keeps equality
    assert copy.deepcopy(a) is a and copy.copy(a) is a
    assert copy.deepcopy([a])[0] is a
    restored = pickle.loads(pickle.dumps(a))
    assert restored == a and space.widths(restored) == space.widths(a)


@pytest.mark.parametrize("name", list_models())
def test_json_round_trip(name: str) -> None:
    space = create_space(name, width_mult=0.5)
    cfg = space.sample(7)
    text = cfg.to_json()
    assert space.from_json(text) == cfg
    assert space.from_json(json.loads(text)) == cfg
    assert json.loads(text)["widths"] == space.widths(cfg)
    # describe() is enough to rebuild the same space
    d = json.loads(json.dumps(space.describe()))
    rebuilt = space_from_description(d)
    assert rebuilt.fingerprint == space.fingerprint == d["fingerprint"]
    assert rebuilt.from_json(text) == cfg


def test_space_from_description_checks_the_fingerprint() -> None:
    space = create_space("resnet20", width_mult=0.5, choices=[0.25, 0.5, 1.0])
    d = json.loads(json.dumps(space.describe()))
    assert space_from_description(d, expected=space).fingerprint == space.fingerprint
    stale = {**d, "fingerprint": "0123456789abcdef"}  # written before the model code changed
    with pytest.raises(SpaceMismatchError, match=r"f\.json: the resnet20 space .*0123456789abcdef"):
        space_from_description(stale, "f.json")
    other = create_space("resnet20", width_mult=0.25, choices=[0.25, 0.5, 1.0])
    with pytest.raises(SpaceMismatchError, match=r"not the expected .*width_mult 0\.5 vs 0\.25"):
        space_from_description(d, "f.json", expected=other)
    with pytest.raises(SpaceMismatchError, match="not a channel-space description"):
        space_from_description({"family": "resnet20"}, "f.json")
    # a family or option this code does not know: the file is named too
    for bad in ({**d, "family": "resnet21"}, {**d, "options": {**d["options"], "depht": 3}}):
        with pytest.raises(SpaceMismatchError, match=r"^f\.json: cannot rebuild the space"):
            space_from_description(bad, "f.json")


def test_fingerprint_ignores_int_vs_float_width_mult() -> None:
    # a YAML config may say width_mult: 1 where another says 1.0
    assert (
        create_space("resnet20", width_mult=1).fingerprint == create_space("resnet20").fingerprint
    )


def test_from_json_refuses_another_space() -> None:
    a = create_space("resnet20")
    b = create_space("resnet20", choices=[0.5, 1.0])
    with pytest.raises(ValueError, match="belongs to space"):
        b.from_json(a.max().to_json())
    with pytest.raises(ValueError, match="'genes'"):
        a.from_json("{}")
    with pytest.raises(ValueError, match="'genes'"):
        a.from_json({"genes": 3})
    with pytest.raises(ValueError):
        a.from_json("not json")


def test_bad_configs_raise_one_clear_error() -> None:
    space = create_space("resnet20")
    n = len(space)
    with pytest.raises(ValueError, match=f"11 genes but space resnet20 has {n}"):
        space.config([0] * (n - 1))
    with pytest.raises(ValueError, match=r"'s1.b0.mid'.*31 out of range"):
        space.config([0, 31] + [0] * (n - 2))
    with pytest.raises(ValueError, match=r"'stage1'.*-1 out of range"):
        space.config([-1] + [0] * (n - 1))
    with pytest.raises(ValueError, match=r"'stage1'.*1.5 is not an integer"):
        space.config([1.5] + [0] * (n - 1))
    other = create_space("resnet20", num_classes=5).max()
    for op in (space.widths, lambda c: space.mutate(c, 0.5), lambda c: space.crossover(c, c)):
        with pytest.raises(ValueError, match="belongs to space"):
            op(other)
    with pytest.raises(ValueError, match=r"0.11 is not a choice"):
        space.uniform(0.11)
    with pytest.raises(TypeError):
        space.widths((0,) * n)  # type: ignore[arg-type]
