"""tools/bench_prune.py on a tiny setting (fake data, two training steps): every step runs,
writes its tables, and a second call reuses every stored step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import WidthScorer

from metaprune import create_space
from metaprune.search import SearchConfig, default_costs, run_search

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT.parent / "shared" / "benchmarks" / "channel-bench-macro" / "Results_MobileNet.json"
_spec = importlib.util.spec_from_file_location("bench_prune", ROOT / "tools" / "bench_prune.py")
bench_prune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_prune)

FAST = ["train.max_steps_per_epoch=2", "train.progress=false", "retrain.latency_repeats=0"]
FAST += ["data.fake_test_size=16", "data.search_size=16", "train.batch_size=8"]


def search_run(space, out: Path) -> Path:
    """A (width-scored) search run of ``space`` with a winner at 0.5 of the FLOPs."""
    cfg = SearchConfig(
        population=8,
        generations=2,
        parents=3,
        mutation_children=2,
        crossover_children=2,
        targets=[0.5],
        tensorboard=False,
    )
    run_search(space, WidthScorer(), default_costs(space), cfg, out)
    return out


def test_finetune_and_peer_steps_run_and_resume(tmp_path, caplog):
    peer = importlib.util.find_spec("torch_pruning") is not None
    space = create_space("resnet20", width_mult=0.25, input_size=12, num_classes=10)
    search = search_run(space, tmp_path / "search")
    argv = ["--data", "fake", "--out-root", str(tmp_path), "--finetune-model", "resnet20"]
    argv += ["--finetune-search-run", str(search)]
    argv += ["--steps", "full", "finetune", *(["peer"] if peer else [])]
    argv += [
        "--criteria",
        "l1",
        "fisher",
        "--option",
        "fisher.batches=1",
        "--kd",
        "--finetune-lr",
        "0.01",
    ]
    argv += ["--full-epochs", "1", "--finetune-epochs", "1", "--batch-size", "8"]
    argv += ["--recalib-batches", "1", "--set"]
    argv += [*FAST, "model.width_mult=0.25", "data.image_size=12", "data.fake_size=64"]
    out = bench_prune.main(argv)
    methods = [r["criterion"] for r in out["finetune"]]
    assert methods[0] == "MetaPruning winner (from scratch)"
    control = "unpruned (same fine-tune)"
    assert methods[1:6] == ["l1", "fisher", "uniform (l1)", control, "winner widths (l1)"]
    assert len(methods) == 6 + peer
    ratios = {r["criterion"]: r["flops_ratio"] for r in out["finetune"]}
    assert ratios.pop(control) == 1.0
    assert all(r <= 0.5 for r in ratios.values())
    fisher = json.loads((tmp_path / "cifar10" / "finetune" / "fisher" / "result.json").read_text())
    assert fisher["identity"]["optim"]["lr"] == 0.01  # --finetune-lr reaches the fine-tune
    assert "| fisher |" in (tmp_path / "cifar10" / "prune.md").read_text()
    caplog.clear()
    assert bench_prune.main(argv)["finetune"] == out["finetune"]
    assert "running" not in caplog.text


@pytest.mark.skipif(not RESULTS.is_file(), reason="the Channel-Bench-Macro results file")
def test_allocate_step_judges_each_criterion_by_the_benchmark(tmp_path):
    argv = ["--results", str(RESULTS), "--data", "fake", "--out-root", str(tmp_path)]
    argv += ["--steps", "allocate", "--criteria", "l1", "distortion", "--targets", "0.5"]
    argv += ["--option", "distortion.batches=1", "--full-epochs", "1", "--batch-size", "8"]
    argv += ["--set", *FAST, "data.image_size=32", "data.fake_size=32", "retrain.export_formats=[]"]
    rows = bench_prune.main(argv)["allocate"]
    names = sorted(r["criterion"] for r in rows)
    assert names == ["benchmark best", "distortion", "l1", "uniform"]
    for r in rows:
        assert r["flops_ratio"] <= 0.5 and 0 <= r["percentile"] <= 100 and len(r["key"]) == 7
    best = next(r for r in rows if r["criterion"] == "benchmark best")
    assert best["percentile"] == 0.0 and all(r["accuracy"] <= best["accuracy"] for r in rows)


def test_criterion_options_read_numbers_in_exponent_form():
    args = bench_prune.parse_args(
        ["--option", "bn_scale.sparsity=1e-4", "fisher.batches=16", "distortion.mode=linear"]
    )
    opts = bench_prune.criterion_options(args)
    assert opts["bn_scale"] == {"sparsity": 1e-4} and opts["fisher"] == {"batches": 16}
    assert opts["distortion"] == {"mode": "linear"}
