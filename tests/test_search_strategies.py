"""What every search strategy promises (``search.algorithm`` random and rl, the GA with a
surrogate): candidates meet the stage's bounds and fill every generation, no network is scored
twice, a seeded run repeats, and a killed run resumes to the uninterrupted result."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import SMALL_SEARCH, Analytic, run_small

SCREENED = {"algorithm": "ga", "surrogate": "ridge", "surrogate_pool": 4, "surrogate_scored": 3}
STRATEGIES = {
    "random": {"algorithm": "random"},
    "rl": {"algorithm": "rl"},
    "ga+surrogate": SCREENED,
}


@pytest.mark.parametrize("name", ["random", "rl"])
def test_fills_every_generation_within_bounds_never_twice(name, search_space, tmp_path):
    kw = {"targets": [[0.3, 0.6], 0.8], "constraints": {"params": 0.7}, **STRATEGIES[name]}
    run, scorer = run_small(search_space, tmp_path, **kw)
    rows = [r for r in run.table() if r["stage"] != "baseline"]
    max_f, max_p = run.meta["max_cost"]["flops"], run.meta["max_cost"]["params"]
    pop, gens = SMALL_SEARCH["population"], SMALL_SEARCH["generations"]
    for stage, (lo, hi) in (("target_0", (0.3, 0.6)), ("target_1", (0.0, 0.8))):
        mine = [r for r in rows if r["stage"] == stage]
        assert Counter(r["generation"] for r in mine) == dict.fromkeys(range(gens), pop)
        assert all(lo * max_f <= r["flops"] <= hi * max_f for r in mine)
        assert all(r["params"] <= 0.7 * max_p for r in mine)
    assert max(scorer.counts.values()) == 1  # no network scored twice, in or across stages
    assert run.winners[0]["best"] == run.best(flops=[0.3, 0.6], params=0.7)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_deterministic_and_resumes_exactly(name, search_space, tmp_path):
    kw = {"targets": [0.5, 0.8], **STRATEGIES[name]}
    full, done = run_small(search_space, tmp_path / "full", **kw)
    again, _ = run_small(search_space, tmp_path / "again", **kw)
    other, _ = run_small(search_space, tmp_path / "other", seed=1, **kw)
    assert again.table() == full.table()
    assert [r["genes"] for r in other.table()] != [r["genes"] for r in full.table()]
    # killed in the second stage's third generation
    killer = Analytic(search_space, fail_at=done.calls - 3)
    with pytest.raises(KeyboardInterrupt):
        run_small(search_space, tmp_path / "killed", killer, **kw)
    resumed, scorer = run_small(search_space, tmp_path / "killed", resume=True, **kw)
    assert scorer.calls == 4  # the killed generation and the three after it
    assert resumed.table() == full.table()
    assert resumed.winners == full.winners
