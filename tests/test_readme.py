"""The README's Python example runs as written (against a small search of its own)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import WidthScorer

from metaprune import create_space
from metaprune.search import SearchConfig, default_costs, run_search

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert "recalibrate_bn" in code  # generated weights are scored after BN recalibration
    monkeypatch.chdir(tmp_path)  # the example opens outputs/quickstart/search
    space = create_space("resnet20", width_mult=0.25, input_size=8, choices=[0.25, 0.5, 1.0])
    cfg = SearchConfig(
        population=4, generations=1, parents=2, mutation_children=1, crossover_children=1,
        tensorboard=False,
    )  # fmt: skip
    run_search(space, WidthScorer(), default_costs(space), cfg, "outputs/quickstart/search")
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["n"] == len(scope["data"].search)
    assert scope["logits"].shape == (len(scope["images"]), 10)
    # the scored network's BN statistics are its own, not the generated ones
    generated, scored = scope["pnet"].generate(scope["cfg"]), scope["model"].state_dict()
    means = [k for k in scored if k.endswith("running_mean")]
    assert means and not any(torch.equal(scored[k], generated[k]) for k in means)
