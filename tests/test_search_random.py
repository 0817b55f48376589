"""Random search (``search.algorithm=random``): fresh feasible candidates every generation, never
one twice, the GA's budget and stages, deterministic and resumable."""

from __future__ import annotations

from conftest import run_small

from metaprune.search.strategies import STRATEGIES, RandomSearch


def go(space, out, scorer=None, **kw):
    return run_small(space, out, scorer, **{"algorithm": "random", **kw})


def test_registered_by_name():
    assert STRATEGIES["random"] is RandomSearch


def test_draws_are_the_gas_random_draws(search_space, tmp_path):
    """Generation 0 is the GA's (the same draws from the same seed); later ones are fresh
    draws, not the GA's children."""
    ga, _ = go(search_space, tmp_path / "ga", algorithm="ga", targets=[0.6])
    rs, _ = go(search_space, tmp_path / "rs", targets=[0.6])

    def gen(run, g):
        return [r for r in run.table() if r["stage"] == "target_0" and r["generation"] == g]

    assert [r["genes"] for r in gen(rs, 0)] == [r["genes"] for r in gen(ga, 0)]
    assert [r["genes"] for r in gen(rs, 1)] != [r["genes"] for r in gen(ga, 1)]
