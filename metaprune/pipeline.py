"""``metaprune pipeline``: train -> search -> retrain winners and baselines, with seeds -> summary.

The whole MetaPruning loop (Liu et al., ICCV 2019, sec. 3): a PruningNet trained by stochastic
structure sampling (sec. 3.2), an evolutionary search with one winner per target (sec. 3.3), each
winner retrained from scratch (sec. 4) beside a uniform-width network (the paper's baseline).
Winners come from the :class:`~metaprune.search.SearchRun` (fully evaluated candidates only).

Departures from the paper, so that a searched-vs-uniform claim survives noise:

* matched cost: each winner's baseline is the uniform config of the smallest cost at or above
  the winner's on every cost its budget bounds (:func:`~metaprune.search.uniform_baseline` with
  ``match``), not the widest under the budget, so the baseline never has less compute;
* seeds: winner and baseline are each retrained with ``pipeline.seeds`` seeds (``train.seed``,
  ``train.seed + 1``, ...) by the same recipe; the summary gives the mean +- half range of the
  test accuracies, and the delta as the mean +- half range of the per-seed differences (winner
  and baseline of the same seed);
* ``pipeline.workers`` independent retrains run side by side, one process each (one per core);
  a config that wins several targets is retrained once for all of them.

Every stage writes under one run directory (``train/``, ``search/``, ``retrain/<label>-seed<s>/``)
and skips itself when its output is complete, so a killed pipeline resumes by running the same
command again; a stage whose inputs changed since (its stage identity,
:mod:`metaprune.engine.identity`) stops with a ``StaleStageError`` naming the keys instead.  With
``supernet=`` the given PruningNet is searched with and ``train/`` is not made.  Output:
``summary.md``, ``summary.json`` and ``accuracy.png`` (retrained test accuracy against FLOPs,
searched and uniform, with the seeds' spread) beside the search's proxy plot
``search/pareto.png``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metaprune.config import use_supernet
from metaprune.cost.latency import load_latency_model
from metaprune.engine.workers import run_jobs
from metaprune.io import atomic_save_png, atomic_write_json, atomic_write_text
from metaprune.retrain.source import slug
from metaprune.search import default_costs
from metaprune.search.baseline import uniform_baseline
from metaprune.space import ChannelConfig

log = logging.getLogger(__name__)

SUMMARY_MD, SUMMARY_JSON, PLOT = "summary.md", "summary.json", "accuracy.png"
SPREAD = "half range"
"""The spread the summary reports beside a mean over seeds: (max - min) / 2."""


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pm(stats: dict[str, Any] | None, scale: float = 1.0, spec: str = ".2f") -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    mean, spread = scale * stats["mean"], scale * stats["spread"]
    return f"{format(mean, spec)} +- {format(spread, spec.lstrip('+'))}"


def seed_stats(values: list[float | None]) -> dict[str, Any]:
    """Mean and spread (half range, :data:`SPREAD`) of one value over seeds; a missing value
    (a job not run) gives ``None`` for both."""
    if not values or any(v is None for v in values):
        return {"mean": None, "spread": None, "values": values}
    return {
        "mean": sum(values) / len(values),
        "spread": (max(values) - min(values)) / 2,
        "values": values,
    }


def target_text(target: Any) -> str:
    """A search target as the summary writes it: ``0.5``, ``50%``, a band ``0.45-0.5``."""
    return "-".join(map(str, target)) if isinstance(target, list | tuple) else str(target)


def summary_markdown(rows: list[dict[str, Any]], title: str, seeds: list[int]) -> str:
    """The summary table as Markdown."""
    lines = [
        f"# {title}",
        "",
        "| target | FLOPs (M) | params (k) | latency (ms) | proxy acc | retrained test acc (%) "
        "| uniform baseline | baseline FLOPs (M) | baseline test acc (%) | delta (pp) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        b = r.get("baseline") or {}
        lines.append(
            f"| {target_text(r['target'])} | {r['flops'] / 1e6:.2f} | {r['params'] / 1e3:.1f} "
            f"| {_fmt(r.get('latency_ms'), '.3f')} | {_fmt(r.get('proxy_accuracy'), '.4f')} "
            f"| {_pm(r.get('test_accuracy'), 100)} | {_fmt(b.get('ratio'), 'g')} "
            f"| {_fmt(b.get('flops') and b['flops'] / 1e6, '.2f')} "
            f"| {_pm(b.get('test_accuracy'), 100)} | {_pm(r.get('delta'), 100, '+.2f')} |"
        )
    lines += [
        "",
        f"Retrained accuracies: mean +- half range over {len(seeds)} seed(s) {seeds} of top-1 on "
        "the official test split, never used for selection (the proxy accuracy is measured on "
        "the held-out `search` split).  The uniform baseline is the uniform-width network of "
        "the smallest FLOPs at or above the winner's, retrained with the same recipe and seeds.  "
        "delta = winner - baseline in percentage points: mean +- half range of the per-seed "
        "differences.  Plot: `accuracy.png` (proxy: `search/pareto.png`).",
        "",
    ]
    return "\n".join(lines)


def plot_accuracy(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """PNG of retrained test accuracy (mean, error bars: half range over seeds) against FLOPs,
    searched winners and their uniform baselines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    for key, label, style in (("winner", "searched", "o-"), ("baseline", "uniform width", "s--")):
        pts = [r if key == "winner" else r.get("baseline") for r in rows]
        pts = sorted(
            (p for p in pts if p and (p.get("test_accuracy") or {}).get("mean") is not None),
            key=lambda p: p["flops"],
        )
        if pts:
            ax.errorbar(
                [p["flops"] / 1e6 for p in pts],
                [100 * p["test_accuracy"]["mean"] for p in pts],
                yerr=[100 * p["test_accuracy"]["spread"] for p in pts],
                fmt=style,
                capsize=4,
                label=label,
            )
    names: dict[tuple[float, float], list[str]] = {}  # targets sharing a winner: one label
    for r in rows:
        if r["test_accuracy"]["mean"] is not None:
            xy = (r["flops"] / 1e6, 100 * r["test_accuracy"]["mean"])
            names.setdefault(xy, []).append(target_text(r["target"]))
    for xy, targets in names.items():
        ax.annotate(", ".join(targets), xy, fontsize=8)
    ax.set_xlabel("FLOPs (MACs) [M]")
    ax.set_ylabel("retrained test top-1 accuracy [%]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_save_png(fig, path)


def _retrain_job(cfg: dict[str, Any], out_dir: str, config: ChannelConfig) -> dict[str, Any]:
    """One retrain, in this process or a worker."""
    from metaprune.retrain import retrain

    return retrain(OmegaConf.create(cfg), out_dir, config)


def _run_retrains(
    cfg: DictConfig, run_dir: Path, jobs: dict[str, tuple[int, ChannelConfig]], workers: int
) -> dict[str, dict[str, Any]]:
    """Retrain every ``label -> (seed, config)`` into ``run_dir/retrain/<label>``, ``workers``
    at a time in spawned processes (1 = here, in order); returns each label's result."""
    plain = OmegaConf.to_container(cfg, resolve=True)

    def job_cfg(seed: int) -> dict[str, Any]:
        out = dict(plain)
        out["retrain"] = {**plain["retrain"], "train": {**plain["retrain"]["train"], "seed": seed}}
        return out

    args = {
        label: (job_cfg(seed), str(run_dir / "retrain" / label), config)
        for label, (seed, config) in jobs.items()
    }
    results: dict[str, dict[str, Any]] = {}
    log.info("[3/3] %d retrains, up to %d side by side", len(args), workers)
    for label, result in run_jobs(_retrain_job, args, workers):
        results[label] = result
        log.info(
            "[3/3] retrain/%s: test accuracy %.4f (%d/%d done)",
            label,
            result["test_accuracy"],
            len(results),
            len(args),
        )
    return results


def _part(results: list[dict[str, Any]], dirs: list[str]) -> dict[str, Any]:
    """A winner's or baseline's summary entry from its per-seed retrain results."""
    lat = [r["latency_ms"] for r in results]
    return {
        "flops": results[0]["flops"],
        "params": results[0]["params"],
        "latency_ms": None if None in lat else sum(lat) / len(lat),
        "test_accuracy": seed_stats([r["test_accuracy"] for r in results]),
        "retrain": dirs,
        "export": str(Path(dirs[0]) / results[0]["export"]["dir"]),
    }


def pipeline(cfg: Any, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Run every stage of ``cfg`` in ``run_dir``; write ``summary.md`` / ``summary.json`` and
    the plot ``accuracy.png``; returns the summary."""
    from metaprune.search import search
    from metaprune.train import train

    run_dir = Path(run_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    # every stage continues its own checkpoint, or returns at once when it is complete
    cfg = OmegaConf.merge(cfg, {"train": {"resume": True}, "search": {"resume": True}})
    supernet = use_supernet(cfg, run_dir)
    if cfg.get("supernet"):
        log.info("[1/3] PruningNet given: %s (no training)", supernet)
    else:
        log.info("[1/3] training the PruningNet -> %s", run_dir / "train")
        train(cfg, run_dir / "train")
    log.info("[2/3] searching -> %s", run_dir / "search")
    run = search(cfg, run_dir / "search", supernet)
    space = run.space
    table = cfg.search.get("latency_table")  # baselines of a latency budget: the search's model
    costs = default_costs(space, load_latency_model(table, space) if table else None)

    pcfg = cfg.get("pipeline") or {}
    base_seed = int(cfg.train.get("seed", 0))
    seeds = [base_seed + k for k in range(int(pcfg.get("seeds", 1)))]
    entries: list[dict[str, Any]] = []  # per winner: its row, its labels and its baseline's
    jobs: dict[str, tuple[int, ChannelConfig]] = {}
    labels: dict[ChannelConfig, str] = {}
    for w in run.winners:
        best = w["best"]
        if best is None:
            log.warning("target %s: no scored config meets its bounds; skipped", w["target"])
            continue
        config = run.config(best)
        # a config that already won another target shares that target's retrains
        label = labels.setdefault(
            config, "winner" if w["target"] is None else f"target{slug(w['target'])}"
        )
        row: dict[str, Any] = {
            "target": w["target"],
            "bounds": w["bounds"],
            "config": config.to_dict(),
            "flops": best["flops"],
            "params": best["params"],
            "proxy_accuracy": best["accuracy"],
            "latency_ms": None,
            "test_accuracy": seed_stats([]),
        }
        wins = [f"{label}-seed{s}" for s in seeds] if pcfg.get("retrain_winners", True) else []
        jobs.update({lab: (s, config) for lab, s in zip(wins, seeds, strict=False)})
        base = (
            uniform_baseline(space, w["bounds"], costs, match=config)
            if pcfg.get("baselines", True)
            else None
        )
        bases = []
        if base is not None:
            ratio = space.ratios[base.indices[0]]
            row["baseline"] = {"ratio": ratio, "rule": "smallest FLOPs at or above the winner's"}
            bases = [f"uniform{ratio:g}-seed{s}" for s in seeds]
            jobs.update({lab: (s, base) for lab, s in zip(bases, seeds, strict=True)})
        entries.append({"row": row, "wins": wins, "bases": bases})

    # the widest first, so that side-by-side workers finish together
    order = sorted(jobs, key=lambda lab: -costs["flops"]([jobs[lab][1]])[0])
    done = _run_retrains(cfg, run_dir, {lab: jobs[lab] for lab in order}, pcfg.get("workers", 1))

    rows = []
    for e in entries:
        row = e["row"]
        if e["wins"]:
            part = _part([done[lab] for lab in e["wins"]], [f"retrain/{x}" for x in e["wins"]])
            row.update(
                latency_ms=part["latency_ms"],
                test_accuracy=part["test_accuracy"],
                retrain=part["retrain"],
                export=part["export"],
            )
        if e["bases"]:
            bpart = _part([done[lab] for lab in e["bases"]], [f"retrain/{x}" for x in e["bases"]])
            row["baseline"].update(bpart)
            if e["wins"]:
                row["delta"] = seed_stats(
                    [
                        done[w]["test_accuracy"] - done[b]["test_accuracy"]
                        for w, b in zip(e["wins"], e["bases"], strict=True)
                    ]
                )
        rows.append(row)

    title = f"metaprune pipeline: {space.family} on {cfg.data.name}"
    summary = {
        "run_dir": str(run_dir),
        "space": space.describe(),
        "seeds": seeds,
        "spread": SPREAD,
        "rows": rows,
    }
    atomic_write_json(run_dir / SUMMARY_JSON, summary)
    atomic_write_text(run_dir / SUMMARY_MD, summary_markdown(rows, title, seeds))
    plot_accuracy(rows, run_dir / PLOT, title)
    log.info(
        "summary written to %s\n%s", run_dir / SUMMARY_MD, summary_markdown(rows, title, seeds)
    )
    return summary
