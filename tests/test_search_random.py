"""Random search (``search.algorithm=random``): fresh feasible candidates every generation, never
one twice, the GA's budget and stages, deterministic and resumable."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import Analytic

from metaprune import create_space
from metaprune.search import SearchConfig, default_costs, run_search
from metaprune.search.strategies import STRATEGIES, RandomSearch

SMALL = {
    "algorithm": "random",
    "population": 10,
    "generations": 5,
    "parents": 3,
    "mutation_children": 4,
    "crossover_children": 4,
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def space():
    return create_space("resnet20", width_mult=0.5, input_size=8, num_classes=5)


def go(space, out, scorer=None, **kw):
    scorer = scorer or Analytic(space)
    cfg = SearchConfig(**{**SMALL, **kw})
    return run_search(space, scorer, default_costs(space), cfg, out), scorer


def test_registered_by_name():
    assert STRATEGIES["random"] is RandomSearch


def test_fills_every_generation_within_bounds_never_twice(space, tmp_path):
    run, scorer = go(space, tmp_path, targets=[[0.3, 0.6], 0.8], constraints={"params": 0.7})
    rows = [r for r in run.table() if r["stage"] != "baseline"]
    max_f, max_p = run.meta["max_cost"]["flops"], run.meta["max_cost"]["params"]
    for stage, (lo, hi) in (("target_0", (0.3, 0.6)), ("target_1", (0.0, 0.8))):
        mine = [r for r in rows if r["stage"] == stage]
        per_gen = Counter(r["generation"] for r in mine)
        assert per_gen == {g: SMALL["population"] for g in range(SMALL["generations"])}
        assert all(lo * max_f <= r["flops"] <= hi * max_f for r in mine)
        assert all(r["params"] <= 0.7 * max_p for r in mine)
    assert max(scorer.counts.values()) == 1  # no network scored twice, in or across stages
    assert run.winners[0]["best"] == run.best(flops=[0.3, 0.6], params=0.7)


def test_draws_are_the_gas_random_draws(space, tmp_path):
    """Generation 0 is the GA's (the same draws from the same seed); later ones are fresh
    draws, not the GA's children."""
    ga, _ = go(space, tmp_path / "ga", algorithm="ga", targets=[0.6])
    rs, _ = go(space, tmp_path / "rs", targets=[0.6])

    def gen(run, g):
        return [r for r in run.table() if r["stage"] == "target_0" and r["generation"] == g]

    assert [r["genes"] for r in gen(rs, 0)] == [r["genes"] for r in gen(ga, 0)]
    assert [r["genes"] for r in gen(rs, 1)] != [r["genes"] for r in gen(ga, 1)]


def test_deterministic_and_resumes_exactly(space, tmp_path):
    kw = {"targets": [0.5, 0.8]}
    full, done = go(space, tmp_path / "full", **kw)
    again, _ = go(space, tmp_path / "again", **kw)
    other, _ = go(space, tmp_path / "other", seed=1, **kw)
    assert again.table() == full.table()
    assert [r["genes"] for r in other.table()] != [r["genes"] for r in full.table()]
    with pytest.raises(KeyboardInterrupt):
        go(space, tmp_path / "killed", scorer=Analytic(space, fail_at=done.calls - 3), **kw)
    resumed, scorer = go(space, tmp_path / "killed", resume=True, **kw)
    assert scorer.calls == 4  # the killed generation and the three after it
    assert resumed.table() == full.table()
    assert resumed.winners == full.winners
