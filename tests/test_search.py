"""Evolutionary search (GA, NSGA-II, constraints, targets, cache, resume, results) with a cheap
analytic scorer, and the proxy scorer on a tiny PruningNet."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import Analytic, ddp_env

from metaprune import create_space
from metaprune.io import CheckpointError
from metaprune.search import (
    Evolution,
    InfeasibleConstraintError,
    ScorerConfig,
    SearchConfig,
    default_costs,
    load_search,
    pareto_mask,
    run_search,
)
from metaprune.search.constraints import Bound, BoundSyntaxError, parse_bound, parse_value

SMALL = {
    "population": 12,
    "generations": 4,
    "parents": 4,
    "mutation_children": 5,
    "crossover_children": 5,
    "tensorboard": False,
}


@pytest.fixture(scope="module")
def space():
    return create_space("resnet20", width_mult=0.5, input_size=8, num_classes=5)


def cfg(**kw) -> SearchConfig:
    return SearchConfig(**{**SMALL, **kw})


def go(space, tmp_path, name="run", scorer=None, **kw):
    scorer = scorer or Analytic(space)
    return run_search(space, scorer, default_costs(space), cfg(**kw), tmp_path / name), scorer


def test_bound_rule():
    assert parse_value("flops", 0.5, 1000.0, "x") == 500.0
    assert parse_value("params", 1, 1000.0, "x") == 1000.0
    assert parse_value("flops", 2000, 1000.0, "x") == 2000.0
    assert parse_value("flops", "600", 1000.0, "x") == 600.0
    assert parse_value("flops", "3M", 1000.0, "x") == 3e6
    for cost in ("flops", "params", "latency"):  # explicit fractions, any cost
        assert parse_value(cost, "50%", 8.0, "x") == 4.0
        assert parse_value(cost, "0.25x", 8.0, "x") == 2.0
    assert parse_value("latency", "2.5ms", 8.0, "x") == 2.5
    assert parse_value("latency", "0.8 ms", 8.0, "x") == 0.8
    assert parse_value("energy", 0.5, 8.0, "x") == 0.5  # a caller's own cost: absolute
    b = parse_bound("flops", [0.4, "600"], 1000.0, "x")
    assert (b.lower, b.upper) == (400.0, 600.0)
    assert parse_bound("flops", [None, 0.5], 1000.0, "x").lower is None
    assert parse_bound("latency", ["1ms", "50%"], 8.0, "x") == Bound("latency", 1.0, 4.0)
    for bad in ("half", -1, 0, [0.6, 0.4], [1, 2, 3], True, "0.5y"):
        with pytest.raises(ValueError):
            parse_bound("flops", bad, 1000.0, "x")
    # a bare number on latency could be ms or a fraction; ms on FLOPs, M on latency are typos
    for cost, bad, msg in (
        ("latency", 1, "ambiguous"),
        ("latency", "2.5", "ambiguous"),
        ("latency", [None, 0.5], "ambiguous"),
        ("latency", "3M", "not a latency unit"),
        ("flops", "2ms", "latency unit"),
        ("params", ["1ms", None], "latency unit"),
    ):
        with pytest.raises(BoundSyntaxError, match=msg):
            parse_bound(cost, bad, 8.0, "x")


def test_ga_candidates_and_winner_meet_constraints(space, tmp_path):
    run, _ = go(space, tmp_path, constraints={"flops": [0.3, 0.6], "params": 0.7})
    mf, mp_ = run.meta["max_cost"]["flops"], run.meta["max_cost"]["params"]
    searched = [r for r in run.table() if r["stage"] != "baseline"]
    assert len(searched) == SMALL["population"] * SMALL["generations"]
    for r in searched:
        assert 0.3 * mf <= r["flops"] <= 0.6 * mf and r["params"] <= 0.7 * mp_
    (w,) = run.winners
    best = w["best"]
    assert 0.3 * mf <= best["flops"] <= 0.6 * mf and best["params"] <= 0.7 * mp_
    ok = [r for r in run.table() if 0.3 * mf <= r["flops"] <= 0.6 * mf and r["params"] <= 0.7 * mp_]
    assert best["accuracy"] == max(r["accuracy"] for r in ok)  # baselines compete too
    # evolution improves on its random first generation
    gen0 = max(r["accuracy"] for r in searched if r["generation"] == 0)
    assert best["accuracy"] > gen0


class Stopping(Analytic):
    """Marks every third new network as stopped early by racing (``full: False``) and
    scores it far above every fully evaluated one, as a bad estimate might."""

    def score(self, configs):
        out = super().score(configs)
        self.last_details = [{"full": bool(hash(c.width_tuple()) % 3)} for c in configs]
        return [s if d["full"] else s + 1.0 for s, d in zip(out, self.last_details, strict=True)]


@pytest.mark.parametrize("algorithm", ["ga", "nsga2"])
def test_winners_and_fronts_only_from_fully_evaluated(space, tmp_path, algorithm):
    run, _ = go(
        space,
        tmp_path,
        scorer=Stopping(space),
        algorithm=algorithm,
        objectives=["flops", "params"],
        targets=[0.5, 0.8],
        constraints={"params": 0.9},
    )
    stopped = [r for r in run.table() if not r["full"]]
    assert stopped and max(r["accuracy"] for r in run.table()) == max(
        r["accuracy"] for r in stopped
    )
    back = load_search(tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "winners.json").read_text())
    fronts = [run.front, back.front, run.pareto(("flops",)), back.pareto(("flops", "params"))]
    fronts.append(json.loads((tmp_path / "run" / "pareto.json").read_text()))
    picked = [w["best"] for r in (run, back) for w in r.winners] + [w["best"] for w in on_disk]
    picked += [r.best(flops=t) for r in (run, back) for t in (0.5, 0.8, 1.0)]
    picked += [row for front in fronts for row in front]
    assert picked and all(row is not None and row["full"] for row in picked)
    # ... and so are the generation reports' best scores and fronts (the log, TensorBoard)
    reports: list = []

    class Record:
        def on_generation(self, report):
            reports.append(report)

        def close(self):
            pass

    c = cfg(algorithm=algorithm, objectives=["flops", "params"], targets=[0.5, 0.8])
    run_search(
        space, Stopping(space), default_costs(space), c, tmp_path / "r", callbacks=[Record()]
    )
    assert reports and all(r.best <= 1.0 for r in reports)  # a stopped row scores above 1
    # each winner is the best fully evaluated row meeting its target
    mf, mp_ = run.meta["max_cost"]["flops"], run.meta["max_cost"]["params"]
    for w, t in zip(run.winners, [0.5, 0.8], strict=True):
        ok = [
            r
            for r in run.table()
            if r["full"] and r["flops"] <= t * mf and r["params"] <= 0.9 * mp_
        ]
        assert w["best"]["accuracy"] == max(r["accuracy"] for r in ok)


def test_narrow_band_fills_the_population_on_resnet50(tmp_path):
    """The paper's ResNet-50 space (31 choices, 224 px) and its 1.95-2.05 GFLOPs band: uniform
    draws meet the band 0.2 % of the time, so the random draws aim at it; generation 0 holds
    the whole population, every candidate in the band, in seconds."""
    import time

    sp = create_space("resnet50", stem="imagenet", num_classes=1000)
    assert len(sp.ratios) == 31
    c = cfg(population=50, generations=2, targets=[["1.95G", "2.05G"]], seed=1)
    t0 = time.perf_counter()
    run = run_search(sp, Analytic(sp), default_costs(sp), c, tmp_path)
    assert time.perf_counter() - t0 < 20
    gen0 = [r for r in run.table() if r["stage"] == "target_0" and r["generation"] == 0]
    assert len(gen0) == 50
    assert all(1.95e9 <= r["flops"] <= 2.05e9 for r in run.table() if r["stage"] == "target_0")
    assert run.meta["stages"][0]["random_draws_aim"]["cost"] == "flops"
    assert 1.95e9 <= run.winners[0]["best"]["flops"] <= 2.05e9


def test_proposal_aims_at_an_interval_or_a_target(space):
    from metaprune.cost import cost_model
    from metaprune.cost.proposal import propose

    flops = cost_model(space).flops_many
    lo, hi = (float(v) for v in flops([space.min(), space.max()]))
    for interval in ((0.30 * hi, 0.32 * hi), (None, 1.2 * lo), (0.95 * hi, None)):
        got = propose(space, flops, interval, np.random.default_rng(0), 20, max_draws=5000)
        f = flops(got)
        assert len(got) == 20 and len({c.indices for c in got}) > 10
        assert (interval[0] is None or f.min() >= interval[0]) and (
            interval[1] is None or f.max() <= interval[1]
        )
    a = propose(space, flops, (0.3 * hi, 0.5 * hi), np.random.default_rng(3), 5)
    assert a == propose(space, flops, (0.3 * hi, 0.5 * hi), np.random.default_rng(3), 5)
    # nearest: the candidate of one batch closest to a target, even if none hits it exactly
    t = 0.4 * hi
    (best,) = propose(space, flops, (t, t), np.random.default_rng(1), 1, max_draws=64, nearest=True)
    batch = propose(space, flops, (t, t), np.random.default_rng(1), 64, max_draws=64, nearest=True)
    assert best == batch[0] and abs(flops([best])[0] - t) == min(abs(flops(batch) - t))
    with pytest.raises(ValueError, match="empty"):
        propose(space, flops, (0.5 * hi, 0.4 * hi), np.random.default_rng(0), 1)


def test_targets_share_one_cache(space, tmp_path):
    run, scorer = go(space, tmp_path, targets=[0.25, 0.5, 0.75])
    assert scorer.counts and max(scorer.counts.values()) == 1  # no network scored twice
    assert len(run.table()) == len(scorer.counts)
    mf = run.meta["max_cost"]["flops"]
    accs = []
    for w, t in zip(run.winners, [0.25, 0.5, 0.75], strict=True):
        assert w["target"] == t and w["best"]["flops"] <= t * mf
        accs.append(w["best"]["accuracy"])
    assert accs == sorted(accs)  # looser targets see every config tighter ones saw
    stages = {r["stage"] for r in run.table()}
    assert stages == {"baseline", "target_0", "target_1", "target_2"}
    # a later stage revisiting a config of an earlier stage reuses its score
    assert sum(scorer.counts.values()) == len(run.table())


def test_nsga2_front_non_dominated_with_extremes(space, tmp_path):
    run, _ = go(space, tmp_path, algorithm="nsga2", objectives=["flops", "params"], targets=[0.5])
    rows = run.table()
    (w,) = run.winners  # targets of an nsga2 search are answered from its table
    assert w["best"] == max(
        (r for r in rows if r["flops"] <= 0.5 * run.meta["max_cost"]["flops"]),
        key=lambda r: r["accuracy"],
    )
    front = run.front
    assert front
    pts = [(r["accuracy"], r["flops"], r["params"]) for r in front]
    for a, b in itertools.permutations(pts, 2):
        dominates = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2] and a != b
        assert not dominates, (a, b)
    ids = {r["id"] for r in front}
    top = max(r["accuracy"] for r in rows)
    cheap = min(r["flops"] for r in rows)
    assert any(r["accuracy"] == top for r in front)
    assert any(r["flops"] == cheap for r in front)
    # everything off the front is dominated by a front member
    for r in rows:
        if r["id"] not in ids:
            assert any(
                f["accuracy"] >= r["accuracy"]
                and f["flops"] <= r["flops"]
                and f["params"] <= r["params"]
                for f in front
            )


class Racing(Analytic):
    """An analytic scorer that keeps a racing history as the proxy scorer does: told its
    rivalry by the search, it evaluates every cost of the rivalry on its history."""

    def set_rivalry(self, rivalry):
        from metaprune.search.scoring.racing import RaceHistory

        self.history = RaceHistory(self.space, 1, rivalry)

    def score(self, configs):
        out = super().score(configs)
        self.history.add(configs, out, [np.ones(1, dtype=bool)] * len(configs))
        return out


def test_latency_search_end_to_end(tmp_path):
    """A latency table built here, loaded as ``search`` loads it, and an NSGA-II search over
    accuracy x latency x FLOPs under a latency target in milliseconds (the crash at start-up:
    the racing rivalry priced an empty history with the latency model)."""
    from metaprune.cost.latency import build_latency_table, load_latency_model

    sp = create_space("resnet20", choices=[0.25, 0.5, 0.75, 1.0], width_mult=0.25, input_size=8)
    table = build_latency_table(sp, n_fit=3, warmup=1, repeats=2, rounds=1)
    # timings of 8x8 layers are noise on a busy CPU: entries that grow with the widths instead
    table.entries = {k: 0.01 * k.cin * k.cout for k in table.entries}
    table.fit = {**table.fit, "mode": "sum", "overhead_ms": 0.2}
    table.save(tmp_path / "lat.json")
    latency = load_latency_model(tmp_path / "lat.json", sp)
    lo, hi = (float(v) for v in latency.predict_many([sp.min(), sp.max()]))
    target = f"{(lo + hi) / 2:.6f}ms"
    costs = default_costs(sp, latency)
    scorer = Racing(sp)
    kw = {"algorithm": "nsga2", "objectives": ["latency", "flops"], "cost": "latency"}
    run = run_search(sp, scorer, costs, cfg(**kw, targets=[target]), tmp_path / "run")
    assert len(scorer.history) == len(run.table())  # the rivalry priced every candidate
    (w,) = run.winners
    assert w["best"]["latency"] <= (lo + hi) / 2 + 1e-9
    assert {"latency", "flops"} <= set(run.front[0])
    assert load_search(tmp_path / "run").winners == run.winners
    with pytest.raises(ValueError, match="ambiguous"):
        run_search(sp, scorer, costs, cfg(**kw, targets=[1]), tmp_path / "bare")


def test_pareto_mask_brute_force():
    rng = np.random.default_rng(0)
    acc, cost = rng.random(200).round(2), rng.random((200, 2)).round(2)
    mask = pareto_mask(acc, cost, chunk=64)
    for i in range(200):
        dom = any(
            acc[j] >= acc[i]
            and (cost[j] <= cost[i]).all()
            and (acc[j] > acc[i] or (cost[j] < cost[i]).any())
            for j in range(200)
        )
        assert mask[i] == (not dom)


def test_deterministic_given_seed(space, tmp_path):
    a, _ = go(space, tmp_path, "a", seed=3)
    b, _ = go(space, tmp_path, "b", seed=3)
    c, _ = go(space, tmp_path, "c", seed=4)
    assert a.table() == b.table()
    assert [r["genes"] for r in a.table()] != [r["genes"] for r in c.table()]


@pytest.mark.parametrize("algorithm", ["ga", "nsga2"])
def test_kill_and_resume_equals_uninterrupted(space, tmp_path, algorithm):
    kw = {"algorithm": algorithm, "targets": [0.4, 0.7] if algorithm == "ga" else []}
    full, done = go(space, tmp_path, "full", **kw)
    fail_at = done.calls - 2  # killed inside a late generation
    with pytest.raises(KeyboardInterrupt):
        go(space, tmp_path, "killed", scorer=Analytic(space, fail_at=fail_at), **kw)
    with pytest.raises(CheckpointError, match="resume"):
        go(space, tmp_path, "killed", **kw)  # refuses to overwrite without resume
    with pytest.raises(CheckpointError, match="population"):
        go(space, tmp_path, "killed", resume=True, **{**kw, "population": 13})
    resumed, scorer = go(space, tmp_path, "killed", resume=True, **kw)
    assert scorer.calls == 3  # the killed generation and the two after it
    assert resumed.table() == full.table()
    assert resumed.winners == full.winners


def test_a_new_strategy_is_a_class_and_a_registry_entry(space, tmp_path, monkeypatch):
    """A strategy registered by name runs on the engine (stages, cache, results), every
    generation is reported to the callbacks, which are closed at the end, and the strategy's
    own state is checkpointed and resumed."""
    from metaprune.search import STRATEGIES, GenerationReport, Strategy

    class Probe(Strategy):  # random draws only, counting its candidates
        name = "probe"
        drawn = 0

        def propose(self, stage):
            kids = self.engine.draw_random(self.cfg.population, stage)
            self.drawn += len(kids)
            return kids

        def state_dict(self):
            return {"drawn": self.drawn}

        def load_state_dict(self, state):
            self.drawn = state["drawn"]

    with pytest.raises(ValueError, match=r"not a registered strategy.*'ga', 'nsga2'"):
        SearchConfig.from_any({"algorithm": "probe"})
    monkeypatch.setitem(STRATEGIES, "probe", Probe)
    reports: list = []

    class Keep:
        def on_generation(self, report):
            reports.append(report)

        def close(self):
            reports.append("closed")

    c = cfg(algorithm="probe", targets=[0.5], constraints={"params": 0.8})
    run = run_search(space, Analytic(space), default_costs(space), c, tmp_path, callbacks=[Keep()])
    assert reports[-1] == "closed" and all(isinstance(r, GenerationReport) for r in reports[:-1])
    assert [(r.stage, r.generation, r.candidates) for r in reports[:-1]] == [
        ("search", g, SMALL["population"]) for g in range(SMALL["generations"])
    ]
    searched = [r for r in run.table() if r["stage"] == "search"]
    assert len(searched) == SMALL["population"] * SMALL["generations"]
    mp_ = run.meta["max_cost"]["params"]
    assert all(r["params"] <= 0.8 * mp_ for r in searched)
    assert run.winners[0]["best"] == run.best(flops=0.5, params=0.8)
    assert load_search(tmp_path).front == run.front
    with pytest.raises(KeyboardInterrupt):
        run_search(space, Analytic(space, fail_at=3), default_costs(space), c, tmp_path / "k")
    resumed = Evolution(
        space, Analytic(space), default_costs(space), replace(c, resume=True), tmp_path / "k"
    )
    assert resumed.run().table() == run.table()
    assert resumed.strategy.drawn == len(searched)


def test_a_finished_search_is_reused_only_with_the_same_identity(space, tmp_path):
    from metaprune.engine.identity import StaleStageError

    ident = {"pruningnet": {"sha256": "aa"}, "data": {"name": "fake", "search_size": 0.25}}
    # precision set: under amp=auto the device decides it (bf16 on CUDA, fp32 on most CPUs)
    c = cfg(resume=True, scorer=ScorerConfig(amp="off"))
    first = run_search(space, Analytic(space), default_costs(space), c, tmp_path, identity=ident)
    again = Analytic(space)
    # execution-only settings (device, logging) are not part of it: the search is returned as is
    c2 = cfg(
        resume=True,
        tensorboard=True,
        scorer=ScorerConfig(device="cuda:3", eval_batch_size=7, amp="off"),
    )
    same = run_search(space, again, default_costs(space), c2, tmp_path, identity=ident)
    assert again.calls == 0 and same.table() == first.table()
    assert load_search(tmp_path).meta["identity"] == {
        **ident,
        "search": same.meta["identity"]["search"],
    }
    changed = (
        ({**ident, "pruningnet": {"sha256": "bb"}}, c, "pruningnet.sha256: 'aa' -> 'bb'"),
        ({**ident, "data": {"name": "fake", "search_size": 0.5}}, c, "data.search_size"),
        (
            ident,
            cfg(resume=True, scorer=ScorerConfig(recalib_batches=3, amp="off")),
            "search.scorer.recalib_batches",
        ),
        (ident, cfg(resume=True, seed=9), "search.seed: 0 -> 9"),
        # the device is not, but the precision it implies under amp=auto is
        (
            ident,
            cfg(resume=True, scorer=ScorerConfig(device="cuda:3")),
            "search.scorer.amp: 'fp32' -> 'bf16'",
        ),
    )
    for identity, settings, key in changed:
        with pytest.raises(StaleStageError, match=f"{key}.*delete") as e:
            run_search(space, again, default_costs(space), settings, tmp_path, identity=identity)
        assert str(tmp_path) in str(e.value)
    assert again.calls == 0


def test_impossible_constraint_names_smallest_value(space, tmp_path):
    smallest = default_costs(space)["flops"]([space.min()])[0]
    with pytest.raises(InfeasibleConstraintError, match=f"smallest reachable flops is {smallest}"):
        go(space, tmp_path, constraints={"flops": 0.001})
    with pytest.raises(InfeasibleConstraintError, match="smallest reachable"):
        go(space, tmp_path, "t", targets=[0.5, 10])
    with pytest.raises(InfeasibleConstraintError, match="largest reachable"):
        go(space, tmp_path, "l", constraints={"params": ["2G", None]})
    with pytest.raises(ValueError, match="latency"):
        go(space, tmp_path, "lat", constraints={"latency": 0.5})
    assert not (tmp_path / "run").exists()  # reported before anything is scored or written


@pytest.mark.parametrize("algorithm", ["ga", "nsga2"])
def test_primary_cost_without_its_model_fails_before_scoring(space, tmp_path, algorithm):
    # nsga2 over flops with search.cost=latency scored every generation, then failed on a bare
    # KeyError 'latency' when plotting the results
    scorer = Analytic(space)
    with pytest.raises(ValueError, match=r"search cost 'latency' is not available"):
        go(space, tmp_path, scorer=scorer, algorithm=algorithm, cost="latency")
    assert scorer.calls == 0 and not (tmp_path / "run").exists()


def test_load_search_round_trip(space, tmp_path):
    run, _ = go(space, tmp_path, targets=[0.5], tensorboard=True)
    d = tmp_path / "run"
    for f in ("scored.csv", "scored.jsonl", "winners.json", "pareto.json", "pareto.png"):
        assert (d / f).stat().st_size > 0
    assert any((d / "tb").iterdir())
    back = load_search(d)
    assert back.table() == run.table()
    assert back.winners == run.winners
    assert back.best(flops=0.5) == run.winners[0]["best"]
    assert back.config(back.winners[0]["best"]).indices == tuple(run.winners[0]["best"]["genes"])
    assert [b["ratio"] for b in back.baselines] == [0.25, 0.49, 0.76, 1.0]
    assert back.pareto(("flops",), flops=0.5) == run.pareto(("flops",), flops=0.5)
    assert len(back.table()) == len((d / "scored.csv").read_text().splitlines()) - 1
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            back.dataframe()
    else:
        assert len(back.dataframe()) == len(back.table())
    with pytest.raises(CheckpointError, match="no finished search"):
        load_search(tmp_path / "nothing")


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="algorithm"):
        SearchConfig.from_any({"algorithm": "sa"})
    with pytest.raises(ValueError, match="exceeds the population"):
        replace(SearchConfig(), mutation_children=40).validate()
    with pytest.raises(Exception, match="populaton"):
        SearchConfig.from_any({"populaton": 3})


# -- the proxy scorer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proxy_parts():
    import torch

    from metaprune.pruningnet import create_pruningnet

    sp = create_space("resnet20", width_mult=0.25, input_size=8, num_classes=5)
    torch.manual_seed(0)
    pnet = create_pruningnet(sp)
    g = torch.Generator().manual_seed(0)
    images, labels = (
        torch.randn(120, 3, 8, 8, generator=g),
        torch.randint(0, 5, (120,), generator=g),
    )
    recal = [(torch.randn(16, 3, 8, 8, generator=g), None) for _ in range(2)]
    configs = [sp.sample(np.random.default_rng(i)) for i in range(4)]
    return sp, pnet, images, labels, recal, configs


def test_proxy_scorer_equals_plain_evaluation(proxy_parts):
    import torch

    from metaprune import build_pruned
    from metaprune.engine.evaluate import evaluate, recalibrate_bn
    from metaprune.search import ProxyScorer

    sp, pnet, images, labels, recal, configs = proxy_parts
    scorer = ProxyScorer(pnet, recal, images, labels, eval_batch_size=50, racing=False)
    scores = scorer.score(configs)
    for c, s in zip(configs, scores, strict=True):
        net = build_pruned(sp, c)
        net.load_state_dict(pnet.generate(c))
        recalibrate_bn(net, recal)
        assert s == evaluate(net, [(images, labels)])[0]
        with torch.no_grad():  # BN folded into the convs: same logits
            torch.testing.assert_close(scorer.network(c)(images), net(images))
    assert scorer.last_details == [{"samples": 120, "full": True}] * 4
    assert scorer.timings["candidates"] == 4 and scorer.timings["images"] == 480


def test_bf16_scoring_on_cpu_runs_in_bf16_and_scores_near_float32(proxy_parts):
    import torch

    from metaprune.search import ProxyScorer

    _, pnet, images, labels, recal, configs = proxy_parts
    fp32 = ProxyScorer(pnet, recal, images, labels, eval_batch_size=50, racing=False)
    bf16 = ProxyScorer(
        pnet, recal, images, labels, eval_batch_size=50, racing=False, amp_dtype=torch.bfloat16
    )
    seen = []
    net = bf16._generate(configs[:1])
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with bf16._autocast():
        net(images[:2])
    assert seen == [torch.bfloat16]
    a, b = fp32.score(configs), bf16.score(configs)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 3 / len(images)


def test_scorer_precision_resolves_here_and_enters_the_identity(monkeypatch):
    import torch

    import metaprune.engine.runtime as runtime
    from metaprune.search.config import ScorerConfig
    from metaprune.search.evolution import search_identity

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(runtime, "native_cpu_bf16", lambda native=native: native)
        assert ScorerConfig().precision() == want
        assert search_identity(SearchConfig())["scorer"]["amp"] == want
        assert ScorerConfig(device="cuda").precision() == "bf16"
        assert ScorerConfig(amp="off").precision() == "fp32"
    with pytest.warns(UserWarning, match="emulated"):
        assert ScorerConfig(amp="bf16").precision() == "bf16"
    for bad in ("fp8", "fp16"):
        with pytest.raises(ValueError, match=r"search\.scorer\.amp"):
            SearchConfig(scorer=ScorerConfig(amp=bad)).validate()


def test_paired_test_and_stage_ends():
    from metaprune.search.scoring.racing import paired_beats, stage_ends

    assert stage_ends(100, 0.25) == [25, 50, 100]
    assert stage_ends(100, 1.0) == [100]
    cand = np.zeros(100, dtype=bool)
    cand[:60] = True  # 60% correct
    same_plus = cand.copy()
    same_plus[60:70] = True  # right on every image the candidate gets, and 10 more
    shuffled = np.random.default_rng(0).permutation(same_plus)  # 70%, unpaired with cand
    worse = cand.copy()
    worse[:5] = False
    rivals = np.stack([same_plus, shuffled, worse, cand])
    # 10 points better on the same images is decisive; the same 10 points on other images is not
    assert paired_beats(rivals, cand, z=2.0).tolist() == [True, False, False, False]


def test_stopped_score_is_corrected_by_the_slice_difficulty(space):
    from metaprune.search.scoring.racing import RaceHistory

    hist = RaceHistory(space, 100)
    genes = space.max().indices
    easy_head = np.zeros(100, dtype=bool)
    easy_head[:20] = True  # right on the first 20 images only: 0.2 overall
    assert hist.estimate(np.ones(10, dtype=bool), genes) == 1.0  # no history: the raw accuracy
    hist.add([space.max()], [0.2], [easy_head])
    # the first 10 images were 0.8 easier than the whole split for the evaluated candidate
    assert hist.estimate(np.ones(10, dtype=bool), genes) == pytest.approx(0.2)
    half = np.r_[np.ones(5), np.zeros(5)].astype(bool)
    assert hist.estimate(half, genes) == 0.0  # 0.5 - 0.8, clipped


def test_stopped_score_is_predicted_without_the_selection_bias(space):
    """Full accuracy a smooth function of the genes, the first 20 images a noisy reading of it:
    a candidate whose first images went badly (why racing stops one) is predicted near its
    true accuracy by the fit, while the control-variate shift keeps its bad luck."""
    from metaprune.search.scoring.racing import MIN_FIT, RaceHistory

    rng = np.random.default_rng(0)
    n_choices = len(space.ratios)

    def truth(genes):
        return 0.3 + 0.4 * np.mean(genes) / (n_choices - 1)

    def head(acc):  # a reading of 20 images: 4 of them off, in either direction
        k = int(np.clip(round(20 * acc) + rng.choice([-4, 4]), 0, 20))
        return np.r_[np.ones(k), np.zeros(100 - k)].astype(bool)

    configs = [space.sample(rng) for _ in range(60)]
    hist = RaceHistory(space, 100)
    hist.add(
        configs, [truth(c.indices) for c in configs], [head(truth(c.indices)) for c in configs]
    )
    assert len(hist) >= MIN_FIT
    for cand in (space.sample(rng) for _ in range(5)):
        true = truth(cand.indices)
        unlucky = np.zeros(20, dtype=bool)
        unlucky[: max(0, round(float(20 * true)) - 4)] = True
        fit = hist.estimate(unlucky, cand.indices)
        shift = unlucky.mean() + hist.accuracy.mean() - hist.correct[:, :20].mean()
        assert abs(fit - true) < 0.05 < abs(shift - true)


def test_racing_stops_only_candidates_beaten_by_k_rivals(proxy_parts):
    from metaprune.cost import cost_model
    from metaprune.search import Bound, ProxyScorer
    from metaprune.search.scoring.racing import Rivalry

    sp, pnet, images, labels, recal, configs = proxy_parts
    full = ProxyScorer(pnet, recal, images, labels, racing=False).score(configs)
    kw = {"racing_slice": 0.25, "racing_top_k": 2}
    racer = ProxyScorer(pnet, recal, images, labels, **kw)
    assert racer.score(configs) == full  # no history yet: everything fully evaluated
    assert all(c is not None and len(c) == 120 for c in racer.last_correct)
    # two rivals right on every image, in a history saved and restored as JSON
    cm = cost_model(sp)
    big, small = sp.max(), sp.min()
    perfect, heads = [np.ones(120, dtype=bool)] * 2, [np.ones(30, dtype=bool)] * 2
    racer = ProxyScorer(pnet, recal, images, labels, **kw)
    racer.observe([small, small], [1.0, 1.0], perfect, heads)
    racer.load_state_dict(json.loads(json.dumps(racer.state_dict())))
    fast = racer.score(configs)
    assert [d["samples"] for d in racer.last_details] == [30] * 4  # all stop after one slice
    assert racer.last_correct == [None] * 4
    # ... measured after recalibrating on the first of the two batches only (racing_recalib)
    first = ProxyScorer(pnet, recal[:1], images[:30], labels[:30], racing=False).score(configs)
    assert fast == first
    # the first test compares with the rivals' first tests: rivals that were wrong everywhere
    # there (after their partial recalibration) let every candidate pass it; the candidates
    # stop at the next test, on the first slice again after their full recalibration
    racer = ProxyScorer(pnet, recal, images, labels, **kw)
    racer.observe([small, small], [1.0, 1.0], perfect, [np.zeros(30, dtype=bool)] * 2)
    racer.score(configs)
    assert [d["samples"] for d in racer.last_details] == [30] * 4
    assert racer.timings["images"] == 4 * (30 + 30)
    # rivals that cost more than the candidate do not stop it (no groups: dominance)
    racer = ProxyScorer(pnet, recal, images, labels, **kw)
    racer.observe([big, big], [1.0, 1.0], perfect, heads)
    assert racer.score(configs[:1]) == full[:1]
    # with groups (a GA's targets) a candidate is stopped only if beaten in every group it meets
    racer = ProxyScorer(pnet, recal, images, labels, **kw)
    racer.observe([small, small], [1.0, 1.0], perfect, heads)
    everything = [Bound("flops", None, float(cm.flops(big)))]
    only_big = [Bound("flops", float(cm.flops(big)), None)]  # the small rivals are not in it
    racer.set_rivalry(Rivalry({"flops": cm.flops_many}, [everything, only_big], ["flops"]))

    def samples(config):
        racer.score([config])
        return racer.last_details[0]["samples"]

    assert samples(configs[0]) == 30  # meets `everything` only: beaten there
    assert samples(big) == 120  # meets both; no rival in `only_big`
    racer.set_rivalry(Rivalry({"flops": cm.flops_many}, [only_big], ["flops"]))
    assert samples(configs[1]) == 30  # meets no group: dominated by the cheaper rivals


def test_stacked_scorer_matches_one_at_a_time(proxy_parts):
    """``stack=K``: waves of K candidates in one grouped network score as one at a time; with
    racing, a wave's members race against the history before it, and the stopped ones leave
    the network (before and after BN folding) while the others go on."""
    from metaprune.cost import cost_model
    from metaprune.search import Bound, ProxyScorer
    from metaprune.search.scoring.racing import Rivalry

    sp, pnet, images, labels, recal, configs = proxy_parts
    one = ProxyScorer(pnet, recal, images, labels, racing=False)
    full = one.score([*configs, sp.max()])
    stacked = ProxyScorer(pnet, recal, images, labels, racing=False, stack=3)
    assert stacked.score([*configs, sp.max()]) == full  # waves of 3 and 2
    for a, b in zip(one.last_correct, stacked.last_correct, strict=True):
        assert np.array_equal(a, b)
    assert stacked.timings["images"] == 5 * 120

    cm = cost_model(sp)
    big = sp.max()
    everything = [Bound("flops", None, float(cm.flops(big)))]
    only_big = [Bound("flops", float(cm.flops(big)), None)]  # no rival meets it
    perfect = [np.ones(120, dtype=bool)] * 2
    # rivals right on the first slice at their first test (stop there), or wrong (stop later,
    # after BN folding, or without folding: the narrowed network must stay in eval mode)
    cases = ((True, True, 2 * 30 + 120), (False, True, 2 * 30 + 2 * 30 + 90))
    for heads, fuse, seen in (*cases, (False, False, 2 * 30 + 2 * 30 + 90)):
        racer = ProxyScorer(
            pnet, recal, images, labels, racing_slice=0.25, racing_top_k=2, stack=2, fuse=fuse
        )
        racer.observe([sp.min()] * 2, [1.0, 1.0], perfect, [np.full(30, heads)] * 2)
        racer.set_rivalry(Rivalry({"flops": cm.flops_many}, [everything, only_big], ["flops"]))
        scores = racer.score([big, configs[0]])  # scored in gene order: configs[0] first
        assert [d["samples"] for d in racer.last_details] == [120, 30]
        assert np.array_equal(racer.last_correct[0], one.last_correct[4])
        assert scores[0] == full[4] and racer.last_correct[1] is None
        assert racer.timings["images"] == seen  # the stopped member left the network
    assert stacked.score_wave([]) == []
    with pytest.raises(ValueError, match="stack must be >= 1"):
        ProxyScorer(pnet, recal, images, labels, stack=0)
    with pytest.raises(ValueError, match=r"search\.scorer\.stack"):
        SearchConfig.from_any({"scorer": {"stack": 0}})


def test_distributed_scorer_shards_and_gathers(space):
    import threading

    from metaprune.search import DistributedScorer
    from metaprune.search.scoring.distributed import shard

    world = 3
    assert sorted(i for r in range(world) for i in shard(10, r, world)) == list(range(10))
    slots: list = [None] * world
    barrier = threading.Barrier(world)

    def make_gather(rank):
        def gather(obj):
            slots[rank] = obj
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out

        return gather

    configs = [space.sample(np.random.default_rng(i)) for i in range(8)]
    inner = [Analytic(space) for _ in range(world)]
    results: list = [None] * world

    def rank_main(r):
        results[r] = DistributedScorer(inner[r], r, world, make_gather(r)).score(configs)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = Analytic(space).score(configs)
    assert results == [expected] * world
    seen = [k for s in inner for k in s.counts.elements()]
    assert sorted(seen) == sorted(c.width_tuple() for c in configs)  # each scored on one rank


def save_tiny_pruningnet(path) -> None:
    """A tiny untrained ResNet-20 PruningNet (8x8 inputs, 4 classes) saved as ``train`` does."""
    from dataclasses import asdict

    from metaprune.io import atomic_torch_save
    from metaprune.pruningnet import create_pruningnet
    from metaprune.pruningnet.checkpoint import FORMAT, PRUNINGNET_FILE

    sp = create_space("resnet20", width_mult=0.25, input_size=8, num_classes=4)
    pnet = create_pruningnet(sp)
    atomic_torch_save(
        path / PRUNINGNET_FILE,
        {
            "format": FORMAT,
            "space": sp.describe(),
            "pruningnet": asdict(pnet.config),
            "state_dict": pnet.state_dict(),
        },
    )


def entry_point_cfg(**scorer) -> dict:
    data = {"name": "fake", "image_size": 8, "fake_size": 96, "fake_classes": 4}
    scorer = {"recalib_batches": 2, "recalib_batch_size": 16, "device": "cpu", **scorer}
    return {"data": {**data, "search_size": 0.25}, "search": {**SMALL, "scorer": scorer}}


def test_search_entry_point_with_a_saved_pruningnet(tmp_path):
    from metaprune.search import search

    save_tiny_pruningnet(tmp_path / "train")
    cfg = entry_point_cfg()
    run = search(cfg, tmp_path / "search", tmp_path / "train")
    assert len(run.table()) == len(load_search(tmp_path / "search").table()) > 40
    assert all(r["samples"] <= 24 and 0 <= r["accuracy"] <= 1 for r in run.table())
    assert run.meta["data"] == "fake"
    with pytest.raises(ValueError, match="expects"):
        search(
            {**cfg, "data": {**cfg["data"], "image_size": 10}}, tmp_path / "s2", tmp_path / "train"
        )
    # resumed with the same inputs: the finished search as it is; with another PruningNet file,
    # scorer setting or split: refused, naming the key
    from metaprune.engine.identity import StaleStageError

    again = {**cfg, "search": {**cfg["search"], "resume": True}}
    assert search(again, tmp_path / "search", tmp_path / "train").table() == run.table()
    save_tiny_pruningnet(tmp_path / "other")
    scorer = {**again["search"]["scorer"], "recalib_batches": 3}
    for changed, pnet, key in (
        (again, "other", "pruningnet.sha256"),
        ({**again, "search": {**again["search"], "scorer": scorer}}, "train", "recalib_batches"),
        ({**again, "data": {**cfg["data"], "search_size": 0.5}}, "train", "data.search_size"),
    ):
        with pytest.raises(StaleStageError, match=key):
            search(changed, tmp_path / "search", tmp_path / pnet)


def _ddp_search(rank, world, port, root, racing):
    import torch

    from metaprune.search import search

    ddp_env(rank, world, port)
    run = search(entry_point_cfg(racing=racing), root / f"ddp{racing}", root / "train")
    (root / f"rows{racing}.{rank}.json").write_text(json.dumps(run.table()))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("racing", [False, True])
def test_search_under_two_gloo_processes(tmp_path, racing):
    """``search`` as under ``torchrun --nproc_per_node 2``: each rank scores a share of every
    generation, both ranks end with the same table, rank 0 alone writes it; without racing the
    scores are those of a single-process search."""
    import socket

    import torch.multiprocessing as mp

    from metaprune.search import search

    save_tiny_pruningnet(tmp_path / "train")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_search, args=(2, port, tmp_path, racing), nprocs=2)
    rows = [json.loads((tmp_path / f"rows{racing}.{r}.json").read_text()) for r in range(2)]
    assert rows[0] == rows[1] == load_search(tmp_path / f"ddp{racing}").table()
    if not racing:
        single = search(entry_point_cfg(racing=False), tmp_path / "single", tmp_path / "train")
        assert [(r["widths"], r["accuracy"]) for r in rows[0]] == [
            (r["widths"], r["accuracy"]) for r in single.table()
        ]
