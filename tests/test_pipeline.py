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
    cfg = _cfg(tmp_path)
    summary = pipeline(cfg, tmp_path)
    (row,) = summary["rows"]
    assert row["target"] == 0.5
    space = create_space("resnet20", choices=cfg.space.choices, **summary["space"]["options"])
    max_flops = cost_model(space).flops(space.max())
    assert row["flops"] <= 0.5 * max_flops
    assert row["baseline"]["flops"] <= 0.5 * max_flops
    # the row is the search's winner and the widest uniform config of its budget, as retrained
    (winner,) = load_search(tmp_path / "search").winners
    assert row["config"]["genes"] == winner["best"]["genes"]
    base = uniform_baseline(space, winner["bounds"])
    assert row["baseline"]["ratio"] == space.ratios[base.indices[0]]
    for label, part in (
        ("target0.5", row),
        (f"uniform{row['baseline']['ratio']:g}", row["baseline"]),
    ):
        result = json.loads((tmp_path / "retrain" / label / "result.json").read_text())
        assert (part["flops"], part["test_accuracy"]) == (result["flops"], result["test_accuracy"])
    for sub in ("train/pruningnet.pt", "search/search.json", "summary.md", "summary.json"):
        assert (tmp_path / sub).is_file(), sub
    export = tmp_path / row["export"]
    assert (export / "pruned.pt").is_file() and (export / "model.ts").is_file()
    md = (tmp_path / "summary.md").read_text()
    assert "| 0.5 |" in md

    # a second run finds every stage complete and returns the same summary
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = pipeline(cfg, tmp_path)
    assert again["rows"] == json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamp

    # changed inputs are never reused: the stage that holds them stops, naming the key
    with pytest.raises(StaleStageError, match=r"train\.epochs: 1 -> 2"):
        pipeline(_cfg(tmp_path, "train.epochs=2"), tmp_path)
    stale_retrain = r"retrain/target0\.5/result\.json was made from other inputs.*train\.epochs"
    with pytest.raises(StaleStageError, match=stale_retrain):
        pipeline(_cfg(tmp_path, "retrain.epochs=2"), tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamp


def test_latency_budget_gets_a_uniform_baseline(tmp_path: Path) -> None:
    """A latency target's baseline is the widest uniform config within it by the search's
    latency model (it got none: the baseline knew only FLOPs and params)."""
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
    base = space.uniform(row["baseline"]["ratio"])
    assert latency.predict(base) <= mid
    wider = space.config([base.indices[0] + 1] * len(space.genes))
    assert latency.predict(wider) > mid


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


def test_config_typos_fail_at_composition() -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        load_config(["train.epoch=3"])
    with pytest.raises(ConfigCompositionException):
        load_config(["model=resnet21"])
    cfg = load_config(["experiment=quickstart"])
    assert cfg.model.name == "mobilenet_v2" and cfg.run_name == "quickstart"


def test_cli_help_and_unknown_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "metaprune.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, check=True)
    assert "pipeline" in out.stdout
    bad = subprocess.run([*cmd, "prune"], capture_output=True, text=True, env=env)
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
