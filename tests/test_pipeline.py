"""The pipeline end to end on FakeData, its resume, the CLI and the config schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from metaprune import create_space
from metaprune.config import build_space
from metaprune.cost import cost_model
from metaprune.engine.identity import StaleStageError
from metaprune.io import CheckpointError
from metaprune.pipeline import pipeline
from metaprune.retrain import RetrainConfig
from metaprune.schema import CONF_DIR, load_config
from metaprune.search import SearchConfig, load_search, uniform_baseline
from metaprune.search.constraints import Bound, parse_bound


def _cfg(run_dir: Path, *overrides: str):
    return load_config(["experiment=tiny", f"run_dir={run_dir}", *overrides])


def test_pipeline_end_to_end_and_resume(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "pipeline.seeds=2")
    summary = pipeline(cfg, tmp_path)
    (row,) = summary["rows"]
    assert row["target"] == 0.5 and summary["seeds"] == [0, 1]
    space = create_space("resnet20", choices=cfg.space.choices, **summary["space"]["options"])
    cm = cost_model(space)
    assert row["flops"] <= 0.5 * cm.flops(space.max())
    # the row is the search's winner beside the matched-cost uniform baseline: the narrowest
    # uniform config with at least the winner's FLOPs (it may exceed the budget)
    (winner,) = load_search(tmp_path / "search").winners
    assert row["config"]["genes"] == winner["best"]["genes"]
    base = space.uniform(row["baseline"]["ratio"])
    assert base == uniform_baseline(
        space, winner["bounds"], match=space.config(row["config"]["genes"])
    )
    assert cm.flops(base) == row["baseline"]["flops"] >= row["flops"]
    if base.indices[0] > 0:
        assert cm.flops(space.config([base.indices[0] - 1] * len(space.genes))) < row["flops"]
    # each part retrained once per seed in its own stage directory; mean and spread from them
    for part, label in (
        (row, "target0.5"),
        (row["baseline"], f"uniform{row['baseline']['ratio']:g}"),
    ):
        assert part["retrain"] == [f"retrain/{label}-seed0", f"retrain/{label}-seed1"]
        results = [json.loads((tmp_path / d / "result.json").read_text()) for d in part["retrain"]]
        assert [r["identity"]["train"]["seed"] for r in results] == [0, 1]
        accs = [r["test_accuracy"] for r in results]
        assert part["test_accuracy"]["values"] == accs
        assert part["test_accuracy"]["mean"] == pytest.approx(sum(accs) / 2)
        assert part["test_accuracy"]["spread"] == pytest.approx(abs(accs[0] - accs[1]) / 2)
        assert part["flops"] == results[0]["flops"]
    deltas = [
        w - b
        for w, b in zip(
            row["test_accuracy"]["values"], row["baseline"]["test_accuracy"]["values"], strict=True
        )
    ]
    assert row["delta"]["values"] == pytest.approx(deltas)
    for sub in ("train/pruningnet.pt", "search/search.json", "search/pareto.png", "summary.md"):
        assert (tmp_path / sub).is_file(), sub
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    export = tmp_path / row["export"]
    assert (export / "pruned.pt").is_file() and (export / "model.ts").is_file()
    md = (tmp_path / "summary.md").read_text()
    mean, spread = 100 * row["test_accuracy"]["mean"], 100 * row["test_accuracy"]["spread"]
    assert "| 0.5 |" in md and f"{mean:.2f} +- {spread:.2f}" in md and "half range" in md

    # a second run (side by side workers this time) finds every stage complete: same summary
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = pipeline(_cfg(tmp_path, "pipeline.seeds=2", "pipeline.workers=2"), tmp_path)
    assert again["rows"] == json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamp

    # changed inputs are never reused: the stage that holds them stops, naming the key
    with pytest.raises(StaleStageError, match=r"train\.epochs: 1 -> 2"):
        pipeline(_cfg(tmp_path, "train.epochs=2"), tmp_path)
    stale_retrain = r"retrain/[a-z]+[\d.]+-seed0/result\.json was made from other inputs.*epochs"
    with pytest.raises(StaleStageError, match=stale_retrain):
        pipeline(_cfg(tmp_path, "retrain.epochs=2"), tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamp


def test_given_supernet_skips_training(tmp_path: Path) -> None:
    """With supernet= the pipeline searches with that PruningNet and trains none of its own; a
    config that wins two targets is retrained once for both."""
    from metaprune.train import train

    train(_cfg(tmp_path / "a"), tmp_path / "a" / "train")
    out = tmp_path / "b"
    # a band and a plain bound holding the same winner; the band names the directory
    given = [f"supernet={tmp_path / 'a' / 'train'}", "search.targets=[[0.05,0.5x],0.5]"]
    summary = pipeline(_cfg(out, *given, "pipeline.baselines=false"), out)
    assert (out / "search" / "search.json").is_file() and not (out / "train").exists()
    first, second = summary["rows"]
    assert first["config"] == second["config"]
    assert first["retrain"] == second["retrain"] == ["retrain/target0.05-0.5x-seed0"]
    assert [p.name for p in (out / "retrain").iterdir()] == ["target0.05-0.5x-seed0"]
    table = (out / "summary.md").read_text()
    assert "\n| 0.05-0.5x | " in table and "\n| 0.5 | " in table


def test_latency_budget_gets_a_uniform_baseline(tmp_path: Path) -> None:
    """A latency target's baseline is the narrowest uniform config at or above the winner's
    latency by the search's latency model (it got none: the baseline knew only FLOPs and
    params)."""
    from metaprune.cost.latency import build_latency_table, load_latency_model

    cfg = _cfg(tmp_path)
    space = build_space(cfg.model, cfg.space, (3, 12, 12), 10)
    table = build_latency_table(space, n_fit=3, warmup=1, repeats=1, rounds=1)
    table.entries = {k: 0.01 * k.cin * k.cout for k in table.entries}  # no timing noise
    table.fit = {**table.fit, "mode": "sum", "overhead_ms": 0.2}
    table.save(tmp_path / "lat.json")
    latency = load_latency_model(tmp_path / "lat.json", space)
    lo, hi = (float(v) for v in latency.predict_many([space.min(), space.max()]))
    mid = (lo + hi) / 2
    overrides = ["search.cost=latency", f"search.latency_table={tmp_path / 'lat.json'}"]
    overrides += [f"search.targets=[{mid:.6f}ms]", "pipeline.retrain_winners=false"]
    (row,) = pipeline(_cfg(tmp_path, *overrides), tmp_path)["rows"]
    winner = latency.predict(space.config(row["config"]["genes"]))
    base = space.uniform(row["baseline"]["ratio"])
    assert latency.predict(base) >= winner
    narrower = space.config([base.indices[0] - 1] * len(space.genes))
    assert latency.predict(narrower) < winner


def test_run_dir_of_another_space_is_refused(tmp_path: Path) -> None:
    from metaprune.train import train

    train(_cfg(tmp_path), tmp_path / "train")
    other = _cfg(tmp_path, "model.width_mult=0.5")
    with pytest.raises(CheckpointError, match="fingerprint"):
        train(other, tmp_path / "train")


def test_uniform_baseline_is_widest_within_budget() -> None:
    space = create_space("resnet20", width_mult=0.25, input_size=16)
    cm = cost_model(space)
    half = 0.5 * cm.flops(space.max())
    base = uniform_baseline(space, [Bound("flops", None, half)])
    assert base is not None and cm.flops(base) <= half
    nxt = space.config([base.indices[0] + 1] * len(space.genes))
    assert cm.flops(nxt) > half
    assert uniform_baseline(space, [Bound("flops", None, 1.0)]) is None
    # a winner's bounds as JSON, a lower bound, other candidate ratios, an unknown cost
    band = [{"cost": "flops", "lower": 0.3 * half, "upper": half}]
    assert uniform_baseline(space, band) == base
    assert uniform_baseline(space, [Bound("flops", cm.flops(nxt), None)]) == space.max()
    assert uniform_baseline(space, [Bound("flops", 0.9 * half, half)], ratios=[0.25, 1.0]) is None
    quarter = space.uniform(0.25, nearest=True)
    assert uniform_baseline(space, [Bound("flops", None, half)], ratios=[0.25, 1.0]) == quarter
    assert uniform_baseline(space, [Bound("latency", None, 5.0)]) is None


def test_matched_baseline_is_narrowest_at_or_above_the_winner() -> None:
    """match=winner: the uniform config of the smallest FLOPs at or above the winner's, even
    above the budget; every cost the bounds name is matched."""
    space = create_space("resnet20", width_mult=0.25, input_size=16)
    cm = cost_model(space)
    budget = [Bound("flops", None, 0.5 * cm.flops(space.max()))]
    within = uniform_baseline(space, budget)
    assert uniform_baseline(space, budget, match=within) == within  # a uniform winner: itself
    # a winner between two uniform configs is matched by the next wider one, beyond the budget
    winner = space.config([*within.indices[:-1], len(space.ratios) - 1])
    base = uniform_baseline(space, budget, match=winner)
    assert cm.flops(base) >= cm.flops(winner) > cm.flops(within)
    narrower = space.config([base.indices[0] - 1] * len(space.genes))
    assert cm.flops(narrower) < cm.flops(winner) and cm.flops(base) > budget[0].upper
    top = uniform_baseline(space, budget, match=space.max())  # 0.97 and 1.0: the same widths
    assert top.width_tuple() == space.max().width_tuple()
    assert uniform_baseline(space, budget, ratios=[0.25, 0.5], match=space.max()) is None
    # params bounded too: at or above the winner on both costs
    both = [*budget, Bound("params", None, cm.params(space.max()))]
    matched = uniform_baseline(space, both, match=winner)
    assert cm.params(matched) >= cm.params(winner) and cm.flops(matched) >= cm.flops(winner)
    narrower = space.config([matched.indices[0] - 1] * len(space.genes))
    assert cm.params(narrower) < cm.params(winner) or cm.flops(narrower) < cm.flops(winner)


def test_config_typos_fail_at_composition() -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        load_config(["train.epoch=3"])
    with pytest.raises(ConfigCompositionException):
        load_config(["model=resnet21"])
    cfg = load_config(["experiment=quickstart"])
    assert cfg.model.name == "resnet20" and cfg.run_name == "quickstart"


def test_quickstart_model_has_the_claimed_stages() -> None:
    """The quick-start's ResNet-20 (CIFAR stem, width 0.5) on 28x28 Fashion-MNIST: three
    stages at 28, 14 and 7 px of 8, 16 and 32 channels at full width (quickstart.yaml)."""
    import torch

    from metaprune import count_flops
    from metaprune.models import build_pruned

    cfg = load_config(["experiment=quickstart"])
    space = build_space(cfg.model, cfg.space, (1, 28, 28), 10)
    sides: dict[int, set[int]] = {}

    def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        sides.setdefault(out.shape[-1], set()).add(out.shape[1])

    model = build_pruned(space, space.max()).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert {k: max(v) for k, v in sides.items()} == {28: 8, 14: 16, 7: 32}
    assert cfg.pipeline.seeds == 2 and len(cfg.search.targets) == 3
    # each budget band ends just under a uniform network's FLOPs and starts at 90 % of them: a
    # winner inside it is matched by that uniform network, with at most 11 % more FLOPs
    full = count_flops(space, space.max())
    for lo, hi in cfg.search.targets:
        above = min(
            f for r in space.ratios if (f := count_flops(space, space.uniform(r))) >= hi * full
        )
        assert hi * full <= above <= 1.001 * hi * full and lo == pytest.approx(0.9 * hi, abs=2e-3)
    assert cfg.search.scorer.search_limit is None and cfg.data.search_limit is None


def test_cli_help_and_unknown_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "metaprune.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, check=True)
    assert "pipeline" in out.stdout
    bad = subprocess.run([*cmd, "frobnicate"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name: str) -> None:
    cfg = load_config([f"experiment={name}", "data.root=somewhere"])
    space = build_space(cfg.model, cfg.space)
    scfg = SearchConfig.from_any(cfg.search)
    RetrainConfig.from_any(cfg.retrain)
    cm = cost_model(space)
    for t in scfg.targets:
        lo, hi = t if isinstance(t, list) else (None, t)
        bound = parse_bound("flops", [lo, hi], cm.flops(space.max()), name)
        assert bound.upper is not None and bound.upper >= cm.flops(space.min())
