"""Channel-Bench-Macro: the two families reproduce the benchmark's networks, keys map to configs
one way, and the benchmark scorer drives a search to the ground-truth best.

The fixture holds 36 entries of the MobileNet results file as published: every network of the
``choices=[0.5, 1.0]`` subspace between 95 and 110 MFLOPs, the uniform ones, the benchmark
README's best-under-budget entries and a few random ones.  The whole file is used only where
``CBM_RESULTS`` (or the default path beside the checkout) points at it.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_cost import torch_macs

from metaprune import build_pruned, count_flops, count_params, create_space
from metaprune.benchmarks import (
    BenchmarkFileError,
    BenchmarkKeyError,
    BenchmarkResults,
    BenchmarkScorer,
    BenchmarkSpaceError,
    NotInBenchmarkError,
    band_mask,
    best_within,
    config_key,
    key_config,
    load_results,
    reference_taus,
)
from metaprune.models.cbm import CBM_CHOICES
from metaprune.models.registry import default_choices
from metaprune.search import Scorer, SearchConfig, default_costs, run_search
from metaprune.space import DEFAULT_RATIOS

FIXTURE = Path(__file__).parent / "fixtures" / "cbm_mobilenet_results.json"
FULL = Path(
    os.environ.get(
        "CBM_RESULTS",
        Path(__file__).parents[2] / "shared/benchmarks/channel-bench-macro/Results_MobileNet.json",
    )
)
SUBSPACE_BAND = (95e6, 110e6)  # the fixture holds every {0.5, 1.0} network in this band

# the benchmark README's ResNet reference figures: key -> (MACs, params)
RESNET_REFERENCE = {
    "1111111": (90_096_896, 963_658),
    "4444444": (1_436_226_560, 15_356_170),
    "2323412": (557_683_712, 6_502_666),
    "4132241": (568_003_072, 5_323_274),
}


@pytest.fixture(scope="module")
def fixture_data() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def mobilenet():
    return create_space("cbm_mobilenet")


def test_default_choices_are_the_benchmarks() -> None:
    for name in ("cbm_mobilenet", "cbm_resnet"):
        assert default_choices(name) == CBM_CHOICES == create_space(name).ratios
    assert default_choices("mobilenet_v2") == DEFAULT_RATIOS == create_space("resnet20").ratios
    with pytest.raises(ValueError, match="unknown model family"):
        default_choices("cbm_vgg")


def test_gene_maxima_in_the_benchmarks_order() -> None:
    maxima = {
        "cbm_mobilenet": [128, 768, 768, 768, 256, 1536, 1024],
        "cbm_resnet": [256, 256, 256, 512, 512, 512, 512],
    }
    for name, expected in maxima.items():
        space = create_space(name)
        assert [g.max_channels for g in space.genes] == expected
        assert space.input_shape == (3, 32, 32) and space.num_classes == 10


def test_stem_is_the_benchmarks_at_either_default() -> None:
    """The benchmark's 3x3 stride-2 stem whatever ``stem`` picks; it only sets the defaults."""
    for stem, size, classes in (("cifar", 32, 10), ("imagenet", 224, 1000)):
        space = create_space("cbm_mobilenet", stem=stem)
        first = space.arch.layers[0]
        assert (first.kernel, first.stride, first.out_hw) == (3, 2, (size // 2, size // 2))
        assert space.input_shape == (3, size, size) and space.num_classes == classes
    with pytest.raises(ValueError, match="unknown stem"):
        create_space("cbm_resnet", stem="tiny")


def test_mobilenet_counts_equal_the_file(mobilenet, fixture_data) -> None:
    for key, entry in fixture_data.items():
        cfg = key_config(mobilenet, key)
        assert count_flops(mobilenet, cfg) == entry["flops"], key
        assert count_params(mobilenet, cfg) == entry["params"], key


@pytest.mark.parametrize(
    ("family", "keys"),
    [("cbm_mobilenet", ["1111111", "4444444", "1443141"]), ("cbm_resnet", list(RESNET_REFERENCE))],
)
def test_built_networks_agree(family: str, keys: list[str], fixture_data) -> None:
    """FlopCounterMode / 2 and ``numel`` of ``build_pruned`` equal the published figures."""
    space = create_space(family)
    for key in keys:
        cfg = key_config(space, key)
        model = build_pruned(space, cfg)
        if family == "cbm_resnet":
            macs, params = RESNET_REFERENCE[key]
        else:
            macs, params = fixture_data[key]["flops"], fixture_data[key]["params"]
        assert (count_flops(space, cfg), count_params(space, cfg)) == (macs, params)
        assert sum(p.numel() for p in model.parameters()) == params
        assert torch_macs(model, space.input_shape) == macs


def test_keys_round_trip_over_the_whole_space() -> None:
    for family in ("cbm_mobilenet", "cbm_resnet"):
        space = create_space(family)
        keys = ["".join(p) for p in itertools.product("1234", repeat=7)]
        configs = [key_config(space, k) for k in keys]
        assert len(set(configs)) == 4**7
        assert [config_key(c) for c in configs] == keys


def test_key_digits_are_genes_in_order(mobilenet) -> None:
    """Digit k of gene i is k/4 of that gene's maximum: c0..c6 in the benchmark's order."""
    cfg = key_config(mobilenet, "4432214")
    assert cfg.width_tuple() == (128, 768, 576, 384, 128, 384, 1024)
    assert key_config(mobilenet, "4444444") == mobilenet.max()
    assert config_key(mobilenet.uniform(0.5)) == "2222222"


def test_stem_does_not_change_the_keys(mobilenet) -> None:
    """``stem`` only sets defaults: given the benchmark's input and classes it is the same net."""
    other = create_space("cbm_mobilenet", stem="imagenet", input_size=32, num_classes=10)
    assert config_key(key_config(other, "4432214")) == "4432214"
    assert other.arch == mobilenet.arch


def test_subspace_keys() -> None:
    sub = create_space("cbm_mobilenet", choices=[0.5, 1.0])
    cfg = key_config(sub, "2424242")
    assert cfg.indices == (0, 1, 0, 1, 0, 1, 0) and config_key(cfg) == "2424242"
    with pytest.raises(BenchmarkKeyError, match=r"ratios \[0.25\] are not choices"):
        key_config(sub, "2124242")


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("123412", "string of 7 digits"),
        ("12341234", "string of 7 digits"),
        (1234123, "string of 7 digits"),
        ("1234105", r"digits \['0', '5'\] are outside 1-4"),
        ("12a4123", r"digits \['a'\]"),
    ],
)
def test_bad_keys_are_named(mobilenet, key, match: str) -> None:
    with pytest.raises(BenchmarkKeyError, match=match):
        key_config(mobilenet, key)


@pytest.mark.parametrize(
    ("family", "opts", "match"),
    [
        ("resnet20", {}, "not a Channel-Bench-Macro space"),
        ("cbm_mobilenet", {"width_mult": 0.5}, "width_mult"),
        ("cbm_mobilenet", {"num_classes": 100}, "num_classes"),
        ("cbm_resnet", {"choices": [0.3, 1.0]}, "not benchmark widths"),
    ],
)
def test_spaces_outside_the_benchmark_are_refused(family: str, opts: dict, match: str) -> None:
    space = create_space(family, **opts)
    with pytest.raises(BenchmarkSpaceError, match=match):
        key_config(space, "1111111")
    with pytest.raises(BenchmarkSpaceError, match=match):
        config_key(space.max())


def test_results_file(fixture_data) -> None:
    res = load_results(FIXTURE)
    assert len(res) == len(fixture_data) == 36 and res.seeds == 3
    i = res.row["4444444"]
    assert res.mean[i] == fixture_data["4444444"]["mean"]
    assert res.acc[i].tolist() == fixture_data["4444444"]["acc"]
    assert res.flops.dtype == res.params.dtype == np.int64
    sub = create_space("cbm_mobilenet", choices=[0.5, 1.0])
    assert set(res.configs(sub)) == {k for k in res.keys if set(k) <= {"2", "4"}}
    assert res.cost_mismatches(create_space("cbm_mobilenet")) == []


def test_bad_results_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFileError, match="does not exist"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchmarkFileError, match=r"bad\.json is corrupt"):
        load_results(bad)
    bad.write_text("[]")
    with pytest.raises(BenchmarkFileError, match="non-empty JSON object"):
        load_results(bad)
    bad.write_text(json.dumps({"1111111": {"acc": [90.0], "mean": 90.0, "flops": 1}}))
    with pytest.raises(BenchmarkFileError, match=r"bad.json: entry '1111111' is malformed"):
        load_results(bad)
    entry = {"acc": [90.0, 91.0], "mean": 90.5, "flops": 1, "params": 2}
    bad.write_text(json.dumps({"1111111": entry, "2222222": {**entry, "acc": [90.0]}}))
    with pytest.raises(BenchmarkFileError, match="'2222222' has 1 seeds, others 2"):
        load_results(bad)


def test_scorer_looks_up_fractions(mobilenet, fixture_data) -> None:
    mean, seed1 = BenchmarkScorer(mobilenet, FIXTURE), BenchmarkScorer(mobilenet, FIXTURE, seed=1)
    assert isinstance(mean, Scorer)
    keys = ["4444444", "1443141", "2222222"]
    configs = [key_config(mobilenet, k) for k in keys]
    assert mean.score(configs) == [fixture_data[k]["mean"] / 100 for k in keys]
    assert seed1.score(configs) == [fixture_data[k]["acc"][1] / 100 for k in keys]
    assert seed1.last_details == [{"bench_key": k} for k in keys]
    assert mean.score([]) == []
    outside = key_config(mobilenet, "1111112")
    with pytest.raises(NotInBenchmarkError, match=r"1 config.* not in benchmark results.*1111112"):
        mean.score([configs[0], outside])
    with pytest.raises(ValueError, match="belongs to space"):
        mean.score([create_space("cbm_mobilenet", choices=[0.5, 1.0]).max()])
    for seed in (3, -1, 0.5):
        with pytest.raises(ValueError, match="benchmark seed must be"):
            BenchmarkScorer(mobilenet, FIXTURE, seed=seed)


def test_scorer_refuses_a_file_of_another_space() -> None:
    with pytest.raises(BenchmarkFileError, match="do not fit space cbm_resnet: 72 flops/params"):
        BenchmarkScorer(create_space("cbm_resnet"), FIXTURE)


@pytest.mark.parametrize("seed", [None, 1])
def test_ga_search_finds_the_best_feasible_network(tmp_path: Path, seed: int | None) -> None:
    """The GA over the fixture's subspace, bounded to the band the fixture holds whole, visits
    every feasible network and returns the benchmark's best of them (by the scored seed)."""
    sub = create_space("cbm_mobilenet", choices=[0.5, 1.0])
    scorer = BenchmarkScorer(sub, FIXTURE, seed=seed)
    cfg = SearchConfig(
        population=6,
        generations=5,
        parents=3,
        mutation_children=2,
        crossover_children=2,
        constraints={"flops": list(SUBSPACE_BAND)},
        baseline_ratios=[0.5, 1.0],
        tensorboard=False,
    )
    run = run_search(sub, scorer, default_costs(sub), cfg, tmp_path)
    res = scorer.results
    feasible = [
        k for k in res.configs(sub) if SUBSPACE_BAND[0] <= res.flops[res.row[k]] <= SUBSPACE_BAND[1]
    ]
    assert len(feasible) == 20
    value = res.mean if seed is None else res.acc[:, seed]
    truth = max(feasible, key=lambda k: value[res.row[k]])
    (winner,) = run.winners
    assert winner["best"]["bench_key"] == truth
    assert winner["best"]["accuracy"] == value[res.row[truth]] / 100


@pytest.mark.skipif(not FULL.is_file(), reason=f"full results file not found at {FULL}")
def test_paper_ga_on_the_whole_file(tmp_path: Path) -> None:
    """The paper's GA (shortened) at 50 % FLOPs lands in the top 1 % of feasible networks."""
    space = create_space("cbm_mobilenet")
    scorer = BenchmarkScorer(space, FULL)
    cfg = SearchConfig(
        population=20,
        generations=8,
        parents=5,
        mutation_children=10,
        crossover_children=10,
        targets=[0.5],
        tensorboard=False,
    )
    run = run_search(space, scorer, default_costs(space), cfg, tmp_path)
    res = scorer.results
    feasible = res.mean[res.flops <= 0.5 * res.flops.max()]
    found = run.winners[0]["best"]["accuracy"] * 100
    assert (feasible > found).mean() < 0.01
    assert len(run.rows) <= 20 * 8 + 4


def test_reference_figures() -> None:
    """Taus are 1 where the rankings agree and -1 where they are reversed; bands select by
    relative distance; the best entry under a budget is the file's."""
    flops = np.arange(1, 101) * 1_000_000
    data = {
        f"{i:07d}": {"acc": [i, 200 - i, 3 * i], "mean": float(i), "flops": int(f), "params": 1}
        for i, f in enumerate(flops, start=1)
    }
    res = BenchmarkResults.from_dict(data)
    rows = reference_taus(res, [50e6], sample=30, draws=3)
    assert [r["subset"] for r in rows] == ["all", "band 50.0M"]
    assert rows[0]["seed1_vs_seed2"] == -1.0  # the second seed ranks in reverse
    assert rows[0]["seed1_vs_rest"] == 1.0 and rows[0]["flops"] == 1.0  # (200 + 2i) / 2, i
    assert rows[1]["entries"] == 11 and rows[1]["draws"] == 1  # 45M..55M, all of them once
    assert band_mask(flops, 50e6).sum() == 11
    assert best_within(res, 42.5e6) == "0000042" and best_within(res, 0.5e6) is None
    with pytest.raises(ValueError, match="band needs"):
        band_mask(flops, 0.0)


def test_fixture_reference_best_entries() -> None:
    """The fixture keeps the README's best-under-budget entries, and they are the best there."""
    res = load_results(FIXTURE)
    top = float(res.flops.max())
    assert [best_within(res, f * top) for f in (0.25, 0.5, 0.75)] == [
        "1443141",
        "2344241",
        "3334344",
    ]
