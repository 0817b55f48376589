"""The quality benchmark's steps (tools/bench_quality.py) on a results file made for the
``choices=[0.25, 0.5]`` subspace of ``cbm_mobilenet`` (128 networks, exact FLOPs and params,
made-up accuracies) and FakeData: every step runs, writes its outputs, is skipped when done and
refuses a stored result made from other inputs.  Plumbing only: no accuracy claim."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metaprune import create_space
from metaprune.benchmarks import config_key, load_results, rank_correlations
from metaprune.benchmarks import quality as quality_mod
from metaprune.benchmarks.reference import percentile, spearman_rho
from metaprune.cost import cost_model
from metaprune.cost.latency import kendall_tau
from metaprune.engine.identity import StaleStageError

SUB = [0.25, 0.5]
CHOICES = "space.choices=[0.25,0.5]"
TOOL = Path(__file__).parents[1] / "tools" / "bench_quality.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_quality", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return load_tool()


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> Path:
    """Every network of the subspace with its exact counts; accuracy rises with the widths,
    unequally per gene, plus seed noise (percent, three seeds)."""
    space = create_space("cbm_mobilenet", choices=SUB)
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(4000)]
    configs = list({c.width_tuple(): c for c in configs}.values())
    assert len(configs) == 2 ** len(space.genes)
    cm = cost_model(space)
    w = np.linspace(3.0, 0.5, len(space.genes))
    data = {}
    for c, f, p in zip(configs, cm.flops_many(configs), cm.params_many(configs), strict=True):
        base = 85.0 + 5.0 * float(w @ np.array(c.ratios())) / w.sum()
        acc = [round(base + float(e), 3) for e in rng.normal(0, 0.2, 3)]
        data[config_key(c)] = {
            "acc": acc,
            "mean": float(np.mean(acc)),
            "std": float(np.std(acc)),
            "flops": int(f),
            "params": int(p),
        }
    path = tmp_path_factory.mktemp("cbm") / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_spearman_rho_and_percentile():
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert spearman_rho([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    with pytest.raises(ValueError, match="equal length"):
        spearman_rho([1, 2], [1, 2, 3])
    assert percentile(np.array([3.0, 2.0, 1.0, 0.5]), 2.0) == 25.0
    assert percentile(np.array([3.0, 2.0]), 3.0) == 0.0


def test_picks_follow_the_proxy_best_feasible_row(results_file):
    from metaprune.benchmarks.keys import key_config
    from metaprune.benchmarks.oracle import to_match
    from metaprune.benchmarks.quality import picks

    res = load_results(results_file)
    space = create_space("cbm_mobilenet", choices=SUB)
    keys = sorted(res.configs(space), key=lambda k: res.flops[res.row[k]])
    small, mid, big = keys[0], keys[1], keys[-1]  # the two smallest are under 50 %

    def row(i, key, acc, full=True):
        genes, flops = list(key_config(space, key).indices), int(res.flops[res.row[key]])
        return {"id": i, "genes": genes, "accuracy": acc, "flops": flops, "full": full}

    # the big network is over the 50 % target; a racing-stopped row never becomes the pick
    rows = [row(0, small, 0.2), row(1, big, 0.9), row(2, mid, 0.95, full=False), row(3, mid, 0.3)]
    (curve,) = picks(res, space, [0.5], rows)
    acc = lambda k: float(res.mean[res.row[k]])  # noqa: E731
    assert curve == [acc(small), acc(small), acc(small), acc(mid)]
    assert to_match(curve, acc(mid)) == (4 if acc(mid) > acc(small) else 1)
    assert to_match(curve, 101.0) is None


def test_rank_correlations_on_the_same_entries(results_file):
    res = load_results(results_file)
    keys = list(res.keys[:60])
    mean = res.mean[[res.row[k] for k in keys]]
    rows = rank_correlations(res, keys, list(mean), [float(np.median(res.flops))])
    assert rows[0]["subset"] == "all" and rows[0]["entries"] == 60
    assert rows[0]["score_tau"] == pytest.approx(1.0) and rows[0]["score_rho"] == pytest.approx(1.0)
    acc = res.acc[[res.row[k] for k in keys]]
    assert rows[0]["seed_vs_seed_tau"] == pytest.approx(kendall_tau(acc[:, 0], acc[:, 1]))
    assert 0 < rows[1]["entries"] < 60
    with pytest.raises(KeyError, match="not in"):
        rank_correlations(res, ["4444444"], [0.5], [])


def test_oracle_step_resumes_and_refuses_other_inputs(tool, results_file, tmp_path, monkeypatch):
    def args(population: int = 8) -> list[str]:
        return [
            *("--results", str(results_file), "--out-root", str(tmp_path), "--steps", "oracle"),
            *("--targets", "0.5", "0.75", "--oracle-seeds", "2", "--oracle-generations", "3"),
            *("--oracle-population", str(population), "--set", CHOICES),
        ]

    out = tool.main(args())["oracle"]
    root = tmp_path / "cbm_mobilenet_cifar10"
    assert (root / "oracle.md").read_text().count("| <= ") == 4  # 2 targets x 2 searches
    assert (root / "oracle.png").stat().st_size > 0
    res = load_results(results_file)
    space = create_space("cbm_mobilenet", choices=SUB)
    top = res.flops[res.row[config_key(space.max())]]
    for t, row in zip((0.5, 0.75), out["targets"], strict=True):
        feasible = res.mean[res.flops <= t * top]
        assert row["feasible"] == feasible.size and row["best_acc"] == feasible.max()
        for algo in ("ga", "random"):
            run = json.loads((root / f"oracle/{algo}_{t:g}_s1.json").read_text())["result"]
            trace = [v for v in run["trace"] if v is not None]
            assert trace == sorted(trace) and trace[-1] == run["winner_acc"]
            assert 8 * 3 <= run["evaluations"] <= 8 * 3 + 2  # + the uniform baselines
            if run["to_best"] is not None:
                i = run["to_best"]
                assert run["trace"][i - 1] == feasible.max()
                assert all(v is None or v < feasible.max() for v in run["trace"][: i - 1])
    monkeypatch.setattr("metaprune.benchmarks.oracle.oracle_run", _must_not_run)
    assert tool.main(args())["oracle"] == out  # done: nothing searched again
    with pytest.raises(StaleStageError, match="population"):
        tool.main(args(population=9))


def _must_not_run(*a, **k):
    raise AssertionError("a finished step ran again")


def test_oracle_step_compares_the_strategies(tool, results_file, tmp_path):
    """rl and ga+surrogate beside the GA: their runs, their rows in oracle.md, the GA's
    median winner as every strategy's yardstick; the surrogate scores a fifth per generation."""
    out = tool.main(
        [
            *("--results", str(results_file), "--out-root", str(tmp_path), "--steps", "oracle"),
            *("--targets", "0.5", "--oracle-seeds", "2", "--oracle-generations", "3"),
            *("--oracle-population", "10", "--set", CHOICES, "--name", "strategies"),
            *("--oracle-algorithms", "ga", "rl", "ga+surrogate"),
        ]
    )["oracle"]
    root = tmp_path / "strategies"
    (row,) = out["targets"]
    assert list(row["algorithms"]) == ["ga", "rl", "ga+surrogate"]
    assert (root / "oracle.md").read_text().count("| <= ") == 3
    ga = [json.loads((root / f"oracle/ga_0.5_s{s}.json").read_text())["result"] for s in (0, 1)]
    assert row["ga_winner_acc"] == float(np.median([r["winner_acc"] for r in ga]))
    assert row["algorithms"]["ga"]["to_ga_winner"]["reached"] == 2  # its own winners
    rl = json.loads((root / "oracle/rl_0.5_s0.json").read_text())["result"]
    sur = json.loads((root / "oracle/ga+surrogate_0.5_s0.json").read_text())["result"]
    assert 10 * 3 <= rl["evaluations"] <= 10 * 3 + 2  # the GA's budget (+ the baselines)
    assert 10 + 2 * 2 <= sur["evaluations"] <= 10 + 2 * 2 + 2  # 10, then 2 (a fifth) a gen
    with pytest.raises(SystemExit):  # an unknown strategy is refused by the command line
        tool.parse_args(["--results", "x", "--oracle-algorithms", "bayes"])


FAKE = [
    "data.image_size=32",
    "data.fake_size=48",
    "data.fake_test_size=16",
    "data.search_size=32",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.recalib_batches=1",
    "train.val_batches=1",
    "train.progress=false",
    "search.tensorboard=false",
    "pruningnet.hidden=4",
    "search.baseline_ratios=[0.25,0.5]",
    "search.scorer.recalib_batches=1",
    "search.scorer.recalib_batch_size=16",
    "search.scorer.eval_batch_size=32",
]


def test_train_proxy_search_knobs_on_fake_data(tool, results_file, tmp_path, monkeypatch):
    monkeypatch.setattr(
        quality_mod,
        "KNOBS",
        {"clean_recalib": {"recalib_augment": False}, "split_8": {"search_limit": 8}},
    )
    args = ["--results", str(results_file), "--out-root", str(tmp_path), "--data", "fake"]
    args += ["--steps", "train", "proxy", "search", "knobs", "--epochs", "1", "--configs", "5"]
    args += [
        "--knob-configs",
        "4",
        "--knob-epochs",
        "1",
        "2",
        "--knob-steps",
        "1",
        "--search-population",
        "4",
        "--search-generations",
        "2",
        "--search-strategies",
        "ga+surrogate",
    ]
    args += ["--targets", "0.75", "--set", CHOICES, *FAKE, "train.batch_size=8"]
    out = tool.main(args)
    root = tmp_path / "cbm_mobilenet_cifar10"
    assert Path(out["train"]["pruningnet_file"]).is_file()
    assert out["train"]["recipe"]["model"]["name"] == "cbm_mobilenet"
    proxy = out["proxy"]
    assert len(proxy["keys"]) == 5 + 2 and proxy["keys"][-2:] == ["1111111", "2222222"]
    assert all(0.0 <= s <= 1.0 for s in proxy["scores"])
    assert proxy["correlations"][0]["entries"] == 7 and "score_tau" in proxy["correlations"][0]
    assert (root / "proxy.png").stat().st_size > 0 and "| all | 7 |" in (
        root / "proxy.md"
    ).read_text()
    (judged,) = out["search"]["targets"]
    res = load_results(results_file)
    assert judged["winner"] in res.row
    assert judged["regret"] == pytest.approx(judged["best_acc"] - judged["winner_acc"])
    assert judged["uniform"] == "1111111"  # 2222222 is above 75 % of its own FLOPs
    runs = out["search_strategies"]
    assert set(runs) == {"ga", "ga+surrogate"} and runs["ga"] == out["search"]
    # the surrogate scores fewer configs; the pick curve ends at the winner
    assert runs["ga+surrogate"]["scored"] < runs["ga"]["scored"] == len(runs["ga"]["picks"][0])
    for r in runs.values():
        assert r["picks"][0][-1] == pytest.approx(r["targets"][0]["winner_acc"])
    assert "| ga+surrogate |" in (root / "search_strategies.md").read_text()
    knobs = {"default", "clean_recalib", "split_8", "epochs_2", "steps_1"}
    assert set(out["knobs"]["correlations"]) == knobs
    assert (root / "knobs.md").read_text().count("## ") == 5
    assert (root / "train_epochs_2" / "pruningnet.pt").is_file()
    assert not (root / "train_epochs_1").exists()
    # 16 training images at batch 8: 2 steps an epoch, 1 with --knob-steps 1
    assert out["train"]["steps"] == 2
    assert json.loads((root / "train_steps_1.json").read_text())["result"]["steps"] == 1
    # done steps are skipped: nothing is trained or scored again
    monkeypatch.setattr("metaprune.train.train", _must_not_run)
    monkeypatch.setattr(quality_mod.ProxyBench, "score", _must_not_run)
    again = tool.main(args)
    assert again["proxy"] == proxy and again["search_strategies"] == runs
    assert again["knobs"] == out["knobs"]
    # the proxy's pick among its own networks: the best-scored feasible one
    (pick,) = proxy["picks"]["targets"]
    limit = 0.75 * float(res.flops[res.row["2222222"]])
    feasible = [
        (s, k)
        for k, s in zip(proxy["keys"], proxy["scores"], strict=True)
        if res.flops[res.row[k]] <= limit
    ]
    assert pick["proxy_acc"] == pytest.approx(100 * max(feasible)[0])
    assert "The proxy's pick among the 7 networks" in (root / "proxy.md").read_text()
    # --compare: finished runs side by side, refused when they scored other networks
    shutil.copytree(root, tmp_path / "other")
    compare = ["--results", str(results_file), "--out-root", str(tmp_path), "--targets", "0.75"]
    compare += ["--set", CHOICES, "--compare", "cbm_mobilenet_cifar10", "other"]
    table = tool.main(compare)["compare"]
    assert "| `other` | 1 |" in table
    assert table.count(f"{pick['percentile']:.1f} (`{pick['winner']}`)") == 2
    assert (tmp_path / "compare.md").read_text() == table
    # how alike the runs rank the networks: tau of each run's scores against the first's
    for name, sign in (("cbm_mobilenet_cifar10", 1), ("other", -1)):
        stored = json.loads((tmp_path / name / "proxy.json").read_text())
        n = len(stored["result"]["scores"])
        stored["result"]["scores"] = [0.5 + sign * i / (4 * n) for i in range(n)]
        (tmp_path / name / "proxy.json").write_text(json.dumps(stored))
    head, _, *rows = [
        [c.strip() for c in line.split("|")] for line in tool.main(compare)["compare"].splitlines()
    ]
    col = head.index("tau vs `cbm_mobilenet_cifar10`")
    assert [r[col] for r in rows] == ["1.000", "-1.000"]
    stored = json.loads((tmp_path / "other" / "proxy.json").read_text())
    stored["result"]["keys"] = stored["result"]["keys"][::-1]
    (tmp_path / "other" / "proxy.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="scored different networks"):
        tool.main(compare)


def test_oracle_and_trainings_side_by_side(tool, results_file, tmp_path, monkeypatch):
    args = ["--results", str(results_file), "--out-root", str(tmp_path), "--data", "fake"]
    args += ["--steps", "oracle", "train", "--epochs", "1", "--targets", "0.75"]
    args += ["--oracle-seeds", "1", "--oracle-population", "4", "--oracle-generations", "2"]
    args += ["--set", CHOICES, *FAKE]
    monkeypatch.setattr("metaprune.train.train", _must_not_run)  # here; not in a worker
    monkeypatch.setattr("metaprune.benchmarks.oracle.oracle_run", _must_not_run)
    two = tool.main([*args, "--workers", "2"])
    root = tmp_path / "cbm_mobilenet_cifar10"
    assert Path(two["train"]["pruningnet_file"]).is_file() and (root / "oracle.md").is_file()
    monkeypatch.undo()
    shutil.rmtree(root / "oracle")
    one = tool.main(args)  # the oracle again, here: the same searches; the trained step kept
    assert one["oracle"] == two["oracle"] and one["train"] == two["train"]
    timings = json.loads((root / "timings.json").read_text())
    assert [t["workers"] for t in timings] == [2, 1]
    assert all(set(t["phases"]) == {"oracle and trainings"} for t in timings)


def test_recipe_identity_ignores_where_data_lie_and_how_training_runs():
    from metaprune.benchmarks.quality import recipe
    from metaprune.schema import load_config

    base = ["model.name=cbm_mobilenet", "data=cifar10"]
    a = recipe(load_config([*base, "data.root=data/a", "train.device=cpu"]))
    assert a == recipe(load_config([*base, "data.root=elsewhere/b", "train.device=auto"]))
    assert a != recipe(load_config([*base, "data.root=data/a", "train.epochs=7"]))


def test_proxy_scored_in_two_worker_processes_as_in_one(tool, results_file, tmp_path, monkeypatch):
    args = ["--results", str(results_file), "--data", "fake", "--steps", "train", "proxy"]
    args += ["--epochs", "1", "--configs", "30", "--targets", "0.75", "--set", CHOICES, *FAKE]
    one = tool.main([*args, "--out-root", str(tmp_path / "one")])
    # the same PruningNet (its stored train step), its 32 networks in two chunks, two processes
    shutil.copytree(tmp_path / "one", tmp_path / "two", ignore=shutil.ignore_patterns("proxy*"))
    monkeypatch.setattr(quality_mod.ProxyBench, "score", _must_not_run)  # here; not in a worker
    two = tool.main([*args, "--out-root", str(tmp_path / "two"), "--workers", "2"])
    chunks = sorted((tmp_path / "two" / "cbm_mobilenet_cifar10" / "proxy").glob("chunk_*.json"))
    assert [p.name for p in chunks] == ["chunk_000.json", "chunk_001.json"]
    assert two["proxy"]["keys"] == one["proxy"]["keys"]
    assert two["proxy"]["scores"] == one["proxy"]["scores"]
