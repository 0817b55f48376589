"""``metaprune pipeline``: train -> search -> retrain winners and baselines -> export -> summary.

The whole MetaPruning loop (Liu et al., ICCV 2019, sec. 3): a PruningNet trained by stochastic
structure sampling (sec. 3.2), an evolutionary search with one winner per target (sec. 3.3), each
winner retrained from scratch (sec. 4) beside the uniform-width network of the same budget (the
paper's baseline, :func:`~metaprune.search.baseline.uniform_baseline`).  Winners come from the
:class:`~metaprune.search.SearchRun` (fully evaluated candidates only).  Every stage writes under
one run directory and skips itself when its output is complete, so a killed pipeline resumes by
running the same command again; a stage whose inputs changed since (its stage identity,
:mod:`metaprune.engine.identity`) stops with a ``StaleStageError`` naming the keys instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metaprune.config import use_supernet
from metaprune.cost.latency import load_latency_model
from metaprune.io import atomic_write_json, atomic_write_text
from metaprune.search import default_costs
from metaprune.search.baseline import uniform_baseline

log = logging.getLogger(__name__)

SUMMARY_MD, SUMMARY_JSON = "summary.md", "summary.json"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The summary table as Markdown."""
    lines = [
        f"# {title}",
        "",
        "| target | FLOPs (M) | params (k) | latency (ms) | proxy acc | retrained test acc "
        "| uniform baseline | baseline FLOPs (M) | baseline test acc | delta |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        b = r.get("baseline") or {}
        delta = None
        if r.get("test_accuracy") is not None and b.get("test_accuracy") is not None:
            delta = 100 * (r["test_accuracy"] - b["test_accuracy"])
        lines.append(
            f"| {r['target']} | {r['flops'] / 1e6:.2f} | {r['params'] / 1e3:.1f} "
            f"| {_fmt(r.get('latency_ms'), '.3f')} | {_fmt(r.get('proxy_accuracy'), '.4f')} "
            f"| {_fmt(r.get('test_accuracy'), '.4f')} | {_fmt(b.get('ratio'), 'g')} "
            f"| {_fmt(b.get('flops') and b['flops'] / 1e6, '.2f')} "
            f"| {_fmt(b.get('test_accuracy'), '.4f')} | {_fmt(delta, '+.2f')} |"
        )
    lines += [
        "",
        "Accuracies are top-1 on the official test split, never used for selection (the proxy "
        "accuracy is measured on the held-out `search` split).  delta = winner - baseline, in "
        "percentage points.",
        "",
    ]
    return "\n".join(lines)


def pipeline(cfg: Any, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Run every stage of ``cfg`` in ``run_dir`` and write ``summary.md`` / ``summary.json``."""
    from metaprune.retrain import retrain
    from metaprune.search import search
    from metaprune.train import train

    run_dir = Path(run_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    # every stage continues its own checkpoint, or returns at once when it is complete
    cfg = OmegaConf.merge(cfg, {"train": {"resume": True}, "search": {"resume": True}})
    supernet = use_supernet(cfg, run_dir)
    log.info("[1/3] training the PruningNet -> %s", run_dir / "train")
    train(cfg, run_dir / "train")
    log.info("[2/3] searching -> %s", run_dir / "search")
    run = search(cfg, run_dir / "search", supernet)
    space = run.space
    table = cfg.search.get("latency_table")  # baselines of a latency budget: the search's model
    costs = default_costs(space, load_latency_model(table, space) if table else None)

    rows: list[dict[str, Any]] = []
    pcfg = cfg.get("pipeline") or {}
    for i, w in enumerate(run.winners):
        best = w["best"]
        if best is None:
            log.warning("target %s: no scored config meets its bounds; skipped", w["target"])
            continue
        label = "winner" if w["target"] is None else f"target{w['target']}"
        row: dict[str, Any] = {
            "target": w["target"],
            "bounds": w["bounds"],
            "config": run.config(best).to_dict(),
            "flops": best["flops"],
            "params": best["params"],
            "proxy_accuracy": best["accuracy"],
            "latency_ms": None,
            "test_accuracy": None,
        }
        if pcfg.get("retrain_winners", True):
            log.info("[3/3] retraining winner %d/%d -> %s", i + 1, len(run.winners), label)
            res = retrain(cfg, run_dir / "retrain" / label, run.config(best))
            row.update(latency_ms=res["latency_ms"], test_accuracy=res["test_accuracy"])
            row["export"] = str(Path("retrain") / label / res["export"]["dir"])
        base = uniform_baseline(space, w["bounds"], costs) if pcfg.get("baselines", True) else None
        if base is not None:
            ratio = space.ratios[base.indices[0]]
            blabel = f"uniform{ratio:g}"
            log.info("[3/3] retraining the uniform baseline -> %s", blabel)
            bres = retrain(cfg, run_dir / "retrain" / blabel, base)
            row["baseline"] = {
                "ratio": ratio,
                "flops": bres["flops"],
                "params": bres["params"],
                "latency_ms": bres["latency_ms"],
                "test_accuracy": bres["test_accuracy"],
            }
        rows.append(row)

    title = f"metaprune pipeline: {space.family} on {cfg.data.name}"
    summary = {"run_dir": str(run_dir), "space": space.describe(), "rows": rows}
    atomic_write_json(run_dir / SUMMARY_JSON, summary)
    atomic_write_text(run_dir / SUMMARY_MD, summary_markdown(rows, title))
    log.info("summary written to %s\n%s", run_dir / SUMMARY_MD, summary_markdown(rows, title))
    return summary
