"""The RL controller (``search.algorithm=rl``): feasible candidates never scored twice, the GA's
stages and budget, deterministic and resumable, and a policy that learns a planted optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_SEARCH, Analytic, run_small

from metaprune import create_space
from metaprune.schema import load_config
from metaprune.search import Evolution, SearchConfig, default_costs
from metaprune.search.config import RLConfig
from metaprune.search.evolution import search_identity
from metaprune.search.strategies import STRATEGIES, ReinforceController
from metaprune.search.strategies.rl import Controller


@pytest.fixture(scope="module")
def cbm():
    """7 genes x 4 choices: small enough for a policy to learn in a few generations."""
    return create_space("cbm_mobilenet")


def go(space, out, scorer=None, **kw):
    return run_small(space, out, scorer, **{"algorithm": "rl", **kw})


def test_registered_and_composed_from_its_config_file():
    assert STRATEGIES["rl"] is ReinforceController
    cfg = SearchConfig.from_any(load_config(["search=rl", "search.rl.hidden=8"]).search)
    assert cfg.algorithm == "rl" and cfg.rl.hidden == 8 and cfg.population == 50
    # its options are in a search's identity only when they are not at their defaults
    assert "rl" not in search_identity(SearchConfig(algorithm="rl"))
    assert search_identity(SearchConfig(algorithm="rl", rl=RLConfig(lr=0.1)))["rl"]["lr"] == 0.1
    for bad, msg in (
        ({"lr": 0.0}, "rl.lr"),
        ({"entropy_weight": -1.0}, "entropy_weight"),
        ({"baseline_decay": 1.0}, "baseline_decay"),
        ({"hidden": 0}, "hidden"),
    ):
        with pytest.raises(ValueError, match=msg):
            SearchConfig(algorithm="rl", rl=RLConfig(**bad)).validate()


def test_the_checkpoint_holds_the_controller(search_space, tmp_path):
    """Its weights, optimiser, generator and baselines (the resume test of every strategy is in
    test_search_strategies.py)."""
    go(search_space, tmp_path, targets=[0.5, 0.8])
    state = json.loads((tmp_path / "search_state.json").read_text())["strategy"]
    assert state["stage"] == "target_1" and isinstance(state["torch"], str)


class Planted:
    """Reward: the share of genes whose choice is the planted one (the optimum is unique)."""

    def __init__(self, planted):
        self.planted = np.array(planted)

    def score(self, configs):
        return [float((np.array(c.indices) == self.planted).mean()) for c in configs]


def test_policy_moves_toward_a_planted_optimum(cbm, tmp_path):
    planted = [3, 0, 2, 1, 3, 0, 2]
    cfg = SearchConfig(**{**SMALL_SEARCH, "algorithm": "rl", "population": 20, "generations": 12})
    eng = Evolution(cbm, Planted(planted), default_costs(cbm), cfg, tmp_path, write=False)
    run = eng.run()
    trained = eng.strategy.controller
    fresh = Controller(len(cbm.genes), len(cbm.ratios), cfg.rl.hidden, eng.strategy.generator)
    before, after = fresh.log_prob(planted), trained.log_prob(planted)
    assert before < np.log(0.25) * len(planted) + 1.0  # about uniform at the start
    assert after > np.log(0.25)  # now more likely than any one choice of one gene at start
    assert run.winners[0]["best"]["genes"] == planted  # and it was sampled and scored


class WithFeatures(Analytic):
    """The analytic scorer offering per-gene feature vectors (as a graph encoder would)."""

    def __init__(self, search_space, dim: int = 3) -> None:
        super().__init__(search_space)
        self.dim = dim

    def gene_features(self):
        return np.random.default_rng(0).normal(size=(len(self.space.genes), self.dim))


def test_per_gene_features_feed_the_controller(search_space, tmp_path):
    plain, _ = go(search_space, tmp_path / "plain")
    fed, _ = go(search_space, tmp_path / "fed", scorer=WithFeatures(search_space))
    off, _ = go(
        search_space,
        tmp_path / "off",
        scorer=WithFeatures(search_space),
        rl=RLConfig(gene_features=False),
    )
    assert [r["genes"] for r in fed.table()] != [r["genes"] for r in plain.table()]
    assert off.table() == plain.table()
    with pytest.raises(ValueError, match=r"gene_features\(\) must be \(n_genes=12, d\)"):
        go(search_space, tmp_path / "bad", scorer=WrongShape(search_space))


class WrongShape(Analytic):
    def gene_features(self):
        return np.zeros((3, 2))


def test_a_graph_encoded_pruningnet_feeds_the_controller_through_the_proxy_scorer(tmp_path):
    import torch

    from metaprune.pruningnet import create_pruningnet
    from metaprune.search import DistributedScorer, ProxyScorer

    sp = create_space("resnet20", width_mult=0.25, input_size=8, num_classes=5)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 5, (32,), generator=g)
    recal = [(torch.randn(8, 3, 8, 8, generator=g), None)]
    feats = {}
    for encoding in ("layer", "graph"):
        torch.manual_seed(0)
        pnet = create_pruningnet(sp, encoding=encoding)
        scorer = ProxyScorer(pnet, recal, images, labels, racing=False)
        feats[encoding] = scorer.gene_features()
        wrapped = DistributedScorer(scorer, 0, 1, gather=lambda x: [x])
        cfg = SearchConfig(algorithm="rl", population=2, mutation_children=1, crossover_children=1)
        eng = Evolution(sp, wrapped, default_costs(sp), cfg, tmp_path / encoding, write=False)
        assert (eng.strategy.features is None) == (encoding == "layer")
    assert feats["layer"] is None
    assert feats["graph"].shape[0] == len(sp.genes) and np.isfinite(feats["graph"]).all()
