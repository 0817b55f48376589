"""Does the search find good networks when the scores are right?  Searches scored by the benchmark.

MetaPruning's search (Liu et al., ICCV 2019, sec. 3.3: the GA, 50 x 20 generations under a FLOPs
bound) is run here with the :class:`~metaprune.benchmarks.scorer.BenchmarkScorer` (each
network's stand-alone accuracy, the mean of the file's seeds) in place of the PruningNet proxy,
beside other strategies (:func:`strategy_overrides`: random search and the RL controller with
the same budget, the GA with a surrogate scoring a fifth of it), for several seeds at each FLOPs
target (a fraction of the largest network's FLOPs).  Per run it records, by number of scored
configs (the search's uniform-width baselines included, as the scorer sees them): the best
feasible accuracy found so far, when the best feasible network of the file was found and when a
network in the top 0.1 % of the feasible ones was; the summary adds when each run first matched
the paper GA's median final winner.  The paper reports none of this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from metaprune.benchmarks.keys import config_key
from metaprune.benchmarks.reference import percentile
from metaprune.benchmarks.results import BenchmarkResults
from metaprune.benchmarks.scorer import BenchmarkScorer
from metaprune.benchmarks.steps import Steps, save_figure
from metaprune.io import atomic_write_text
from metaprune.search import SearchConfig, default_costs, run_search
from metaprune.space import ChannelSpace

DEFAULT_STRATEGIES = ("ga", "random")
"""The paper's GA and random search with the same budget."""
SURROGATE_SHARE = 5
"""The GA with a surrogate scores ``population // SURROGATE_SHARE`` candidates a generation
after the first (a fifth: with the ``population`` of generation 0, under a quarter of the GA's
budget at the paper's 50 x 20)."""
TOP_SHARE = 0.001
"""The top share of feasible networks (0.1 %) a search is timed to reach."""


def flops_limit(results: BenchmarkResults, space: ChannelSpace, target: float) -> float:
    """``target`` x the FLOPs of the largest network of ``space`` (a search's FLOPs target)."""
    return target * float(results.flops[results.row[config_key(space.max())]])


def feasible_means(results: BenchmarkResults, space: ChannelSpace, target: float) -> np.ndarray:
    """Mean accuracies (%) of the file's networks of ``space`` within the FLOPs ``target``."""
    keys = list(results.configs(space))
    idx = np.array([results.row[k] for k in keys], dtype=np.int64)
    return results.mean[idx][results.flops[idx] <= flops_limit(results, space, target)]


def strategy_overrides(population: int) -> dict[str, dict[str, Any]]:
    """The strategies the oracle step compares, by label: their ``SearchConfig`` overrides
    (``population`` is the search's, which the surrogate's scored share follows)."""
    return {
        "ga": {"algorithm": "ga"},
        "random": {"algorithm": "random"},
        "rl": {"algorithm": "rl"},
        "ga+surrogate": {
            "algorithm": "ga",
            "surrogate": "ridge",
            "surrogate_scored": max(1, population // SURROGATE_SHARE),
        },
    }


def to_match(curve: Sequence[float | None], level: float) -> int | None:
    """Scored configs until ``curve`` (an accuracy after each scored config, ``None`` before the
    first) first reaches ``level`` (``None``: never)."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= level), None)


def oracle_run(
    space: ChannelSpace,
    scorer: BenchmarkScorer,
    cfg: SearchConfig,
    target: float,
) -> dict[str, Any]:
    """One search of ``space`` with ``cfg`` (its ``targets`` replaced by ``[target]``) scored by
    ``scorer``: the best feasible mean accuracy (%) after each scored config (``None`` before the
    first feasible one), the evaluations that reached the best feasible network and the top
    0.1 % (``None`` if never), and the winner's key, accuracy and percentile."""
    results = scorer.results
    run = run_search(
        space,
        scorer,
        default_costs(space),
        replace(cfg, targets=[target], tensorboard=False),
        ".",
        write=False,
        callbacks=[],
    )
    feasible = np.sort(feasible_means(results, space, target))[::-1]
    top = feasible[max(1, math.ceil(TOP_SHARE * feasible.size)) - 1]
    limit = flops_limit(results, space, target)
    trace: list[float | None] = []
    best: float | None = None
    for row in sorted(run.table(), key=lambda r: r["id"]):
        if row["flops"] <= limit:
            acc = float(results.mean[results.row[row["bench_key"]]])
            best = acc if best is None else max(best, acc)
        trace.append(best)
    to_best, to_top = to_match(trace, float(feasible[0])), to_match(trace, float(top))
    winner = run.winners[0]["best"]
    win_acc = float(results.mean[results.row[winner["bench_key"]]])
    return {
        "trace": trace,
        "evaluations": len(trace),
        "to_best": to_best,
        "to_top": to_top,
        "winner": winner["bench_key"],
        "winner_acc": win_acc,
        "winner_percentile": percentile(feasible, win_acc),
    }


def oracle_step(
    steps: Steps,
    space: ChannelSpace,
    results: BenchmarkResults,
    results_id: Mapping[str, Any],
    targets: Sequence[float],
    seeds: int,
    search: SearchConfig,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
) -> dict[str, Any]:
    """Every (target, strategy, seed) search as a resumable sub-step
    ``oracle/<label>_<t>_s<seed>`` (``strategies``: labels of :func:`strategy_overrides`), then
    the summary (recomputed from the stored runs: milliseconds), ``oracle.md`` and
    ``oracle.png`` under ``steps.root``.  ``results_id`` identifies the results file (its path
    and content hash)."""
    overrides = strategy_overrides(search.population)
    unknown = [s for s in strategies if s not in overrides]
    if unknown or not strategies:
        raise ValueError(f"oracle strategies {unknown}: choose among {list(overrides)}")
    scorer = BenchmarkScorer(space, results)
    base = {"results": dict(results_id), "space": space.describe()}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for t in targets:
        for label in dict.fromkeys(strategies):
            for seed in range(seeds):
                over = overrides[label]
                cfg = replace(search, **over, seed=seed, targets=[t], tensorboard=False)
                ident = {**base, "target": t, "search": cfg.to_dict()}
                res = steps.run(
                    f"oracle/{label}_{t:g}_s{seed}",
                    ident,
                    lambda cfg=cfg, t=t: oracle_run(space, scorer, cfg, t),
                )
                runs.setdefault(f"{t:g}", {}).setdefault(label, []).append(res)
    summary = summarize(results, space, targets, runs)
    atomic_write_text(steps.root / "oracle.md", oracle_markdown(summary))
    save_figure(oracle_figure(summary, runs), steps.root / "oracle.png")
    return summary


def reached(trace: Sequence[float | None], level: float) -> int | None:
    """Scored configs until the best found first reaches ``level`` (``None``: never)."""
    for i, v in enumerate(trace, start=1):
        if v is not None and v >= level:
            return i
    return None


def _spread(values: Sequence[int | None], budget: int) -> dict[str, Any]:
    """Median, min and max over seeds (a seed that never reached counts as beyond the budget)."""
    v = np.array([budget + 1 if x is None else x for x in values], dtype=np.float64)
    med = float(np.median(v))
    return {
        "reached": int(sum(x is not None for x in values)),
        "seeds": len(values),
        "median": None if med > budget else med,
        "min": None if v.min() > budget else int(v.min()),
        "max": None if v.max() > budget else int(v.max()),
    }


def summarize(
    results: BenchmarkResults,
    space: ChannelSpace,
    targets: Sequence[float],
    runs: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
) -> dict[str, Any]:
    """Per target and strategy: evaluations to the best feasible network, to the top 0.1 % and
    (with ``ga`` among the strategies) to the GA's median final winner accuracy, the winners'
    accuracy and percentile; per target the best feasible network."""
    out: dict[str, Any] = {"targets": []}
    for t in targets:
        feasible = feasible_means(results, space, t)
        by = runs[f"{t:g}"]
        ga_win = float(np.median([r["winner_acc"] for r in by["ga"]])) if "ga" in by else None
        row: dict[str, Any] = {
            "target": t,
            "feasible": int(feasible.size),
            "best_acc": float(feasible.max()),
            "ga_winner_acc": ga_win,
            "algorithms": {},
        }
        for algo, rs in by.items():
            budget = max(r["evaluations"] for r in rs)
            to_ga = None if ga_win is None else [reached(r["trace"], ga_win) for r in rs]
            row["algorithms"][algo] = {
                "budget": budget,
                "to_best": _spread([r["to_best"] for r in rs], budget),
                "to_top": _spread([r["to_top"] for r in rs], budget),
                "to_ga_winner": None if to_ga is None else _spread(to_ga, budget),
                "winner_acc_mean": float(np.mean([r["winner_acc"] for r in rs])),
                "winner_acc_min": float(np.min([r["winner_acc"] for r in rs])),
                "winner_percentile_max": float(max(r["winner_percentile"] for r in rs)),
            }
        out["targets"].append(row)
    return out


def _cell(s: Mapping[str, Any]) -> str:
    med = "> budget" if s["median"] is None else f"{s['median']:.0f}"
    lo = "-" if s["min"] is None else str(s["min"])
    hi = "> budget" if s["max"] is None else str(s["max"])
    return f"{med} [{lo}, {hi}] ({s['reached']}/{s['seeds']})"


def oracle_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| FLOPs target | feasible nets | best feasible (%) | search | budget | evaluations to "
        "the best: median [min, max] (seeds reaching) | evaluations to the top 0.1 % | "
        "evaluations to the GA's median winner | winner mean acc. (%) (worst) | worst winner "
        "percentile (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["targets"]:
        ga = "-" if row["ga_winner_acc"] is None else f"{row['ga_winner_acc']:.2f}"
        for algo, a in row["algorithms"].items():
            to_ga = "-" if a["to_ga_winner"] is None else _cell(a["to_ga_winner"])
            lines.append(
                f"| <= {row['target']:.0%} | {row['feasible']} | {row['best_acc']:.2f} | {algo} | "
                f"{a['budget']} | {_cell(a['to_best'])} | {_cell(a['to_top'])} | "
                f"{to_ga} (GA: {ga}) | {a['winner_acc_mean']:.2f} ({a['winner_acc_min']:.2f}) | "
                f"{a['winner_percentile_max']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def oracle_figure(
    summary: Mapping[str, Any], runs: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]
) -> Any:
    """Best feasible accuracy found against scored configs: mean over seeds and min-max band
    per strategy, one panel per target, the best feasible network dashed, the GA's median
    winner dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["targets"]
    fig, axes = plt.subplots(
        1, len(rows), figsize=(5 * len(rows), 4), squeeze=False, layout="constrained"
    )
    for ax, row in zip(axes[0], rows, strict=True):
        for algo, rs in runs[f"{row['target']:g}"].items():
            n = max(len(r["trace"]) for r in rs)
            tr = np.full((len(rs), n), np.nan)
            for i, r in enumerate(rs):
                tr[i, : len(r["trace"])] = [np.nan if v is None else v for v in r["trace"]]
            x = np.arange(1, n + 1)
            ok = ~np.isnan(tr).any(axis=0)
            ax.plot(x[ok], tr[:, ok].mean(axis=0), label=f"{algo} (mean of {len(rs)} seeds)")
            ax.fill_between(x[ok], tr[:, ok].min(axis=0), tr[:, ok].max(axis=0), alpha=0.2)
        ax.axhline(row["best_acc"], ls="--", c="k", lw=0.8, label="best feasible")
        if row["ga_winner_acc"] is not None:
            ax.axhline(row["ga_winner_acc"], ls=":", c="0.4", lw=0.8, label="GA's median winner")
        ax.set_xscale("log")
        ax.set_title(f"FLOPs <= {row['target']:.0%} of max ({row['feasible']} networks)")
        ax.set_xlabel("scored configs")
        ax.set_ylabel("best benchmark mean acc. found (%)")
        ax.set_ylim(row["best_acc"] - 2.0, row["best_acc"] + 0.2)
        ax.legend(loc="lower right")
    return fig
