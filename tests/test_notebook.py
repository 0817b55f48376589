"""notebooks/pareto.ipynb executes headless on a tiny finished search, so it never rots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import WidthScorer

from metaprune import create_space, load_search, run_search
from metaprune.search import SearchConfig, default_costs

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "pareto.ipynb"


def test_pareto_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = create_space("resnet20", width_mult=0.25, input_size=16)
    cfg = SearchConfig(
        population=10,
        generations=2,
        parents=3,
        mutation_children=3,
        crossover_children=3,
        targets=[0.3, 0.6],
        tensorboard=False,
    )
    run_dir = tmp_path / "search"
    run_search(space, WidthScorer(), default_costs(space), cfg, run_dir)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("METAPRUNE_SEARCH_RUN", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={})
    client.execute(cwd=str(tmp_path), env=dict(os.environ))
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "configs on the front" in text
    assert "no latency front" in text
    # each winner's line names the widest scored uniform baseline within its FLOPs bounds
    run = load_search(run_dir)
    lines = {ln.split()[0]: ln for ln in text.splitlines() if "|" in ln}
    for w in run.winners:
        (b,) = [b for b in w["bounds"] if b["cost"] == "flops"]
        fits = [
            u["ratio"]
            for u in run.baselines
            if (b["lower"] or 0) <= u["flops"] <= (b["upper"] or float("inf"))
        ]
        assert fits, "the test's targets should each have a uniform baseline"
        assert lines[str(w["target"])].split("|")[1].split()[0] == f"{max(fits):g}"
