"""The GA with a surrogate (``search.surrogate``): only the picked children are scored, no
unscored config can win, the ranking is logged, deterministic and resumable; without one the GA
is unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter

import numpy as np
import pytest
from conftest import SMALL_SEARCH, run_small

from metaprune.cost.latency import kendall_tau
from metaprune.search import SearchConfig
from metaprune.search.evolution import search_identity
from metaprune.search.strategies.surrogate import SURROGATES, Ridge, Screen

SCREENED = {"surrogate": "ridge", "surrogate_pool": 4, "surrogate_scored": 3}


def go(space, out, scorer=None, **kw):
    return run_small(space, out, scorer, **{**kw})


def test_without_a_surrogate_the_ga_is_unchanged(search_space, tmp_path):
    """The genes of a GA search as they were before surrogates existed (a digest), and a
    default search's identity without the new keys."""
    run, _ = go(search_space, tmp_path, targets=[0.5], generations=4)
    genes = [r["genes"] for r in sorted(run.table(), key=lambda r: r["id"])]
    assert hashlib.sha256(json.dumps(genes).encode()).hexdigest()[:16] == "a0e24706c47b74e8"
    new_keys = {"rl", "surrogate", "surrogate_pool", "surrogate_scored"}
    assert not new_keys & set(run.meta["identity"]["search"])
    assert not new_keys & set(search_identity(SearchConfig()))
    assert "surrogate" not in run.table()[-1]


def test_only_picked_children_are_scored_and_no_unscored_config_wins(search_space, tmp_path):
    run, scorer = go(search_space, tmp_path, targets=[0.5, 0.8], **SCREENED)
    rows = run.table()
    assert Counter(tuple(r["widths"]) for r in rows) == scorer.counts  # every row scored once
    assert max(scorer.counts.values()) == 1
    for stage in ("target_0", "target_1"):
        per_gen = Counter(r["generation"] for r in rows if r["stage"] == stage)
        assert per_gen == {0: 10, **{g: 3 for g in range(1, SMALL_SEARCH["generations"])}}
    screened = [r for r in rows if r["stage"] != "baseline" and r["generation"] > 0]
    assert all("surrogate" in r for r in screened)
    max_f = run.meta["max_cost"]["flops"]
    for w, t in zip(run.winners, (0.5, 0.8), strict=True):
        scored = [r for r in rows if r["flops"] <= t * max_f]
        assert tuple(w["best"]["widths"]) in scorer.counts
        assert w["best"]["accuracy"] == max(r["accuracy"] for r in scored)


def test_pool_members_left_unscored_leave_the_visited_set(search_space, tmp_path, monkeypatch):
    seen: list[tuple[int, int, int]] = []
    select = Screen.select

    def spy(self, make):
        before = set(self.engine.visited)
        pool: list = []

        def recording_make():
            kids = make()
            pool.extend(kids)
            return kids

        keep = select(self, recording_make)
        after = set(self.engine.visited)
        keys = {self.engine.space.config(g).width_tuple() for g in keep}
        assert after == before | keys
        seen.append((len(pool), len(keep), len(after - before)))
        return keep

    monkeypatch.setattr(Screen, "select", spy)
    go(search_space, tmp_path, targets=[0.5], **SCREENED)
    assert seen and all(p == 4 * 10 and k == 3 and n == 3 for p, k, n in seen)


def test_the_surrogate_ranks_and_its_tau_is_logged(search_space, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="metaprune.search.strategies.surrogate"):
        run, _ = go(search_space, tmp_path, generations=6, surrogate="ridge", surrogate_scored=6)
    logged = [r.getMessage() for r in caplog.records if "Kendall tau" in r.getMessage()]
    assert len(logged) == 5  # every generation after the first
    rows = [r for r in run.table() if "surrogate" in r]
    assert kendall_tau([r["surrogate"] for r in rows], [r["accuracy"] for r in rows]) > 0.5


def test_ridge_recovers_an_additive_function():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(200, 6)).astype(float)
    y = x @ np.array([3.0, -1.0, 0.5, 0.0, 2.0, 1.0]) + 4.0
    pred = Ridge().fit(x, y).predict(x)
    assert np.corrcoef(pred, y)[0, 1] > 0.999
    assert SURROGATES["ridge"] is Ridge


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"surrogate": "forest"}, "choose one of"),
        ({"surrogate": "ridge", "algorithm": "nsga2"}, "algorithm=ga"),
        ({"surrogate": "ridge", "algorithm": "random"}, "algorithm=ga"),
        ({"surrogate": "ridge", "surrogate_pool": 0}, "surrogate_pool"),
        ({"surrogate": "ridge", "surrogate_scored": 41}, "surrogate_scored"),
    ],
)
def test_bad_surrogate_settings_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SearchConfig(**{**SMALL_SEARCH, **kw}).validate()
