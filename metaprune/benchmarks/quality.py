"""Does the PruningNet proxy rank networks, and does the proxy-scored search find good ones?

The MetaPruning pipeline (Liu et al., ICCV 2019): a PruningNet trained by stochastic structure
sampling (sec. 3.2) scores candidates with generated weights after BN recalibration, and the
GA searches under a FLOPs bound with those scores (sec. 3.3).  The paper judges the winners by
retraining a few of them; here every candidate of a Channel-Bench-Macro space is judged by the
benchmark's stand-alone accuracy.  The steps (each resumable, :mod:`metaprune.benchmarks.steps`):

* ``train``: a PruningNet of the space with the project's own ``train(cfg, out_dir)`` (the
  recipe, i.e. the composed config groups, recorded with the result),
* ``proxy``: the search's own :class:`~metaprune.search.scoring.ProxyScorer` (BN recalibrated as
  the search does, racing off so every score is complete) on N random networks of the file plus
  the uniform-width ones, in chunks; Kendall tau and Spearman rho against the benchmark mean,
  overall and in +-10 % FLOPs bands at the file's FLOPs quartiles, beside the seed-vs-seed
  ceiling and the FLOPs-only floor on the same networks, a scatter plot, and the proxy's pick
  among these networks at each FLOPs target judged like a search's winner,
* ``search``: the paper's GA scored by the proxy at each FLOPs target (``metaprune``'s own
  search, resumable); each winner's benchmark mean, percentile among the feasible networks,
  regret to the best feasible one, and the best feasible uniform-width network,
* ``knobs``: the ``proxy`` figures on the first networks for other scorer settings (fewer or
  more recalibration images, clean recalibration, a smaller evaluation split) and for
  PruningNets trained for other numbers of epochs, one sub-step each.

Accuracies in the tables are percent: the benchmark's on the original CIFAR-10 test set, the
proxy's on the search split of the data the PruningNet was trained on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from metaprune.benchmarks.keys import config_key, key_config
from metaprune.benchmarks.oracle import feasible_means, flops_limit, strategy_overrides, to_match
from metaprune.benchmarks.reference import percentile, rank_correlations
from metaprune.benchmarks.results import BenchmarkResults
from metaprune.benchmarks.steps import Steps, save_figure
from metaprune.cost.latency import kendall_tau
from metaprune.data.identity import data_identity
from metaprune.engine import TrainConfig
from metaprune.engine.identity import file_hash, require_identity
from metaprune.engine.workers import in_processes, run_jobs, thread_share
from metaprune.groups import to_dataclass
from metaprune.io import atomic_write_json, atomic_write_text, read_json
from metaprune.search.config import ScorerConfig, SearchConfig
from metaprune.search.results import fully_evaluated
from metaprune.space import ChannelSpace

CHUNK = 25
"""Configs scored per resumable sub-step."""
KNOBS: dict[str, dict[str, Any]] = {
    "recalib_256": {"recalib_batches": 4},
    "recalib_2048": {"recalib_batches": 32},
    "clean_recalib": {"recalib_augment": False},
    "split_1000": {"search_limit": 1000},
    "split_2000": {"search_limit": 2000},
}
"""Scorer settings the ``knobs`` step compares with the ``proxy`` step's (recalibration batches
of ``recalib_batch_size`` images; ``search_limit`` images of the search split)."""


def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config node as plain, resolved values (for identities and recipes)."""
    return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # type: ignore[return-value]


def workdir(path: Path, identity: Mapping[str, Any]) -> Path:
    """``path`` for a step that resumes its own files: ``identity.json`` inside it is written
    on first use and must match later (so an old run is never resumed with other inputs)."""
    stored = path / "identity.json"
    if stored.is_file():
        require_identity(
            stored, read_json(stored), dict(identity), f"delete {path} to redo the step"
        )
    else:
        atomic_write_json(stored, dict(identity))
    return path


def recipe(cfg: DictConfig) -> dict[str, Any]:
    """What a PruningNet's training depends on: the model, space, data, PruningNet, optimiser,
    schedule and training groups of ``cfg`` (less where the data lie and how training is
    executed: device, precision, logging)."""
    groups = ("model", "space", "pruningnet", "optim", "sched")
    out = {g: plain(cfg[g]) for g in groups if g in cfg}
    if not out.get("space", {}).get("depth", True):  # off by default, added after recipes existed
        del out["space"]["depth"]
    out["data"] = data_identity(cfg.data)  # not the data folder or loader workers
    out["train"] = to_dataclass(TrainConfig, cfg.get("train"), "train").identity()
    return out


def train_step(steps: Steps, cfg: DictConfig, name: str = "train") -> dict[str, Any]:
    """Train the PruningNet of ``cfg`` into ``<root>/<name>`` (``train`` resumes and skips on
    its own); the result names the recipe and the PruningNet file beside the training metrics."""
    from metaprune.pruningnet import PRUNINGNET_FILE
    from metaprune.train import train

    ident = {"recipe": recipe(cfg)}
    out = workdir(steps.root / name, ident)

    def compute() -> dict[str, Any]:
        metrics = train(cfg, out)
        keep = {k: v for k, v in metrics.items() if k not in ("identity", "space")}
        return {"recipe": ident["recipe"], "pruningnet_file": str(out / PRUNINGNET_FILE), **keep}

    return steps.run(name, ident, compute)


def _run_step(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``: one job of :func:`side_by_side`, here or in a worker."""
    return fn(*args)


def side_by_side(jobs: Mapping[str, tuple], workers: int = 1) -> dict[str, Any]:
    """Each ``name -> (step function, *args)`` run (every step stores its own result, e.g.
    :func:`train_step`), in ``workers`` spawned processes when > 1, started in the order given
    (put the longest first); the results by name."""
    return dict(run_jobs(_run_step, jobs, workers))


class ProxyBench:
    """The search's proxy scorer over a trained PruningNet and ``cfg.data``, loaded on first use
    (so steps already done load nothing)."""

    def __init__(self, cfg: DictConfig, pruningnet: str | os.PathLike, space: ChannelSpace) -> None:
        self.cfg, self.path, self.space = cfg, Path(pruningnet), space
        self.identity = {"pruningnet": file_hash(self.path), "data": data_identity(cfg.data)}
        self._parts: tuple[Any, Any, Any] | None = None

    def scorer_config(self, **overrides: Any) -> ScorerConfig:
        """The search's scorer settings with racing off (every score complete) and
        ``overrides``."""
        base = SearchConfig.from_any(self.cfg.get("search")).scorer
        return replace(base, racing=False, **overrides)

    def score(self, keys: Sequence[str], scfg: ScorerConfig) -> list[float]:
        """Proxy accuracies (fractions) of the benchmark networks ``keys``."""
        from metaprune.data import build_datasets
        from metaprune.engine import Runtime
        from metaprune.pruningnet import load_pruningnet
        from metaprune.search.scoring import ProxyScorer

        if self._parts is None:
            rt = Runtime.setup(scfg.device)
            pnet = load_pruningnet(self.path, self.space, map_location=rt.device)
            self._parts = (pnet, build_datasets(self.cfg.data), rt.device)
        pnet, data, device = self._parts
        scorer = ProxyScorer.from_datasets(pnet, data, scfg, device)
        return [float(s) for s in scorer.score([key_config(self.space, k) for k in keys])]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a scoring worker without what it loaded (the worker loads its own)."""
        return {**self.__dict__, "_parts": None}


ScoreJob = tuple[str, ProxyBench, Sequence[str], ScorerConfig]
"""``(sub-step name, bench, networks, scorer)``: one list of scores for :func:`score_jobs`."""
_WORKER_BENCHES: dict[str, ProxyBench] = {}
"""A scoring worker's benches, each loaded once, by PruningNet hash and data."""


def _score_in_worker(bench: ProxyBench, keys: Sequence[str], scfg: ScorerConfig) -> list[float]:
    key = json.dumps(bench.identity, sort_keys=True)
    return _WORKER_BENCHES.setdefault(key, bench).score(keys, scfg)


def score_jobs(steps: Steps, jobs: Sequence[ScoreJob], workers: int = 1) -> list[list[float]]:
    """The scores of each job, ``CHUNK`` networks per resumable sub-step ``<name>/chunk_<i>``.

    Sub-steps already stored are checked first (one made from other inputs is refused before
    anything runs); with ``workers`` > 1 the pending ones are scored in that many spawned
    processes, each with its share of this process's torch threads, and stored as each
    finishes.  The scores are those of one process (each network is scored alone)."""
    subs = []
    for j, (name, bench, keys, scfg) in enumerate(jobs):
        for i in range(0, len(keys), CHUNK):
            chunk = list(keys[i : i + CHUNK])
            ident = {**bench.identity, "scorer": scfg.identity(), "keys": chunk}
            subs.append((j, f"{name}/chunk_{i // CHUNK:03d}", ident, bench, chunk, scfg))

    def run(s: int, scores: list[float] | None = None) -> list[float]:
        _, name, ident, bench, chunk, scfg = subs[s]
        return steps.run(
            name, ident, lambda: bench.score(chunk, scfg) if scores is None else scores
        )

    done = {s: run(s) for s in range(len(subs)) if steps.done(subs[s][1])}
    pending = {s: subs[s][3:] for s in range(len(subs)) if s not in done}
    if workers > 1 and len(pending) > 1:
        n = min(workers, len(pending))
        for s, scores in in_processes(_score_in_worker, pending, n, thread_share(n)):
            done[s] = run(s, scores)
    out: list[list[float]] = [[] for _ in jobs]
    for s, sub in enumerate(subs):
        out[sub[0]] += done[s] if s in done else run(s)
    return out


def draw_keys(results: BenchmarkResults, space: ChannelSpace, n: int, seed: int) -> list[str]:
    """``n`` random networks of ``space`` in the file (every one when fewer), then the
    uniform-width ones."""
    uniform = [config_key(space.uniform(r)) for r in space.ratios]
    keys = sorted(k for k in results.configs(space) if k not in uniform)
    pick = np.random.default_rng(seed).permutation(len(keys))[:n]
    return [keys[i] for i in pick] + [k for k in uniform if k in results.row]


def flops_levels(results: BenchmarkResults) -> list[float]:
    """The FLOPs levels of the bands: the quartiles of the file's FLOPs (as ``bench_cbm``)."""
    return [float(v) for v in np.quantile(results.flops, [0.25, 0.5, 0.75])]


def correlation_markdown(rows: Sequence[Mapping[str, Any]], label: str = "proxy") -> str:
    """Rank correlations as a Markdown table (tau / rho of the scores, the ceiling, the floor)."""
    head = (
        f"| subset | networks | {label} tau | {label} rho | seed-vs-seed tau (ceiling) | "
        "FLOPs-only tau (floor) |\n|---|---|---|---|---|---|\n"
    )
    names = ("score_tau", "score_rho", "seed_vs_seed_tau", "flops_tau")
    cells = []
    for r in rows:
        vals = ["-" if r.get(n) is None else f"{r[n]:.3f}" for n in names]
        cells.append(f"| {r['subset']} | {r['entries']} | " + " | ".join(vals) + " |")
    return head + "\n".join(cells) + "\n"


def proxy_step(
    steps: Steps,
    bench: ProxyBench,
    results: BenchmarkResults,
    n: int,
    seed: int,
    targets: Sequence[float],
    workers: int = 1,
) -> dict[str, Any]:
    """Score ``n`` random networks and the uniform ones by the proxy (in ``workers``
    processes: :func:`score_jobs`); the rank correlations, the proxy's pick among them at each
    of ``targets`` (:func:`proxy_picks`, recomputed from the stored scores), ``proxy.md`` and
    the scatter plot ``proxy.png``."""
    keys = draw_keys(results, bench.space, n, seed)
    scfg = bench.scorer_config()
    (scores,) = score_jobs(steps, [("proxy", bench, keys, scfg)], workers)
    ident = {**bench.identity, "scorer": scfg.identity(), "keys": keys}

    def compute() -> dict[str, Any]:
        rows = rank_correlations(results, keys, scores, flops_levels(results))
        return {"keys": keys, "scores": scores, "correlations": rows}

    out = steps.run("proxy", ident, compute)
    out = {**out, "picks": proxy_picks(results, bench.space, targets, keys, out["scores"])}
    text = correlation_markdown(out["correlations"])
    text += (
        f"\n## The proxy's pick among the {len(keys)} networks\n\n{search_markdown(out['picks'])}"
    )
    atomic_write_text(steps.root / "proxy.md", text)
    save_figure(scatter(results, keys, scores), steps.root / "proxy.png")
    return out


def scatter(results: BenchmarkResults, keys: Sequence[str], scores: Sequence[float]) -> Any:
    """Proxy accuracy against benchmark mean accuracy, coloured by FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.array([results.row[k] for k in keys])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    pts = ax.scatter(100 * np.asarray(scores), results.mean[idx], c=results.flops[idx] / 1e6, s=12)
    fig.colorbar(pts, ax=ax, label="MFLOPs")
    ax.set_xlabel("proxy accuracy on the search split (%)")
    ax.set_ylabel("benchmark mean accuracy (%)")
    ax.set_title(f"{len(keys)} networks")
    return fig


def search_step(
    steps: Steps,
    cfg: DictConfig,
    bench: ProxyBench,
    results: BenchmarkResults,
    targets: Sequence[float],
    strategy: str = "ga",
) -> dict[str, Any]:
    """A search scored by the proxy at each FLOPs target (``cfg.search`` otherwise): the paper's
    GA, or another strategy of :func:`~metaprune.benchmarks.oracle.strategy_overrides` (e.g.
    ``ga+surrogate``), resumable in ``<root>/search`` (``<root>/search_<strategy>``); each
    winner judged by the benchmark, and the benchmark accuracy of the proxy's pick after each
    scored config (``picks``: recomputed from the stored run, so older results gain it)."""
    from metaprune.search import search
    from metaprune.search.results import load_search

    strategies = strategy_overrides(int(cfg.search.population))
    if strategy not in strategies:
        raise ValueError(f"unknown search strategy {strategy!r}; choose one of {list(strategies)}")
    over = {**strategies[strategy], "targets": list(targets)}
    scfg = OmegaConf.merge(cfg, {"search": over})
    # SearchConfig.to_dict: options added later enter the identity only when set
    ident = {**bench.identity, "search": SearchConfig.from_any(scfg.search).to_dict()}
    ident["search"].pop("resume", None)
    name = "search" if strategy == "ga" else f"search_{strategy}"
    out = workdir(steps.root / name, ident)

    def compute() -> dict[str, Any]:
        t0 = time.perf_counter()
        resumed = OmegaConf.merge(scfg, {"search": {"resume": True}})
        run = search(resumed, out, bench.path)
        judged = judge(results, bench.space, targets, winner_keys(bench.space, run.winners))
        return {**judged, "scored": len(run.rows), "seconds": time.perf_counter() - t0}

    res = steps.run(name, ident, compute)
    res = {**res, "picks": picks(results, bench.space, targets, load_search(out).rows)}
    atomic_write_text(steps.root / f"{name}.md", search_markdown(res))
    return res


def picks(
    results: BenchmarkResults,
    space: ChannelSpace,
    targets: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
) -> list[list[float | None]]:
    """Per target, after each scored config (the search's rows in scoring order): the benchmark
    mean (%) of the network the proxy would pick then (the best fully evaluated feasible row,
    ties to fewer FLOPs and the earlier row, as the search's winner; ``None`` before the
    first)."""
    rank = lambda r: (-r["accuracy"], r["flops"], r["id"])  # noqa: E731
    out = []
    for t in targets:
        limit, best, curve = flops_limit(results, space, t), None, []
        for r in rows:
            feasible = fully_evaluated(r) and r["flops"] <= limit
            if feasible and (best is None or rank(r) < rank(best)):
                best = r
            key = None if best is None else config_key(space.config(best["genes"]))
            curve.append(None if key is None else float(results.mean[results.row[key]]))
        out.append(curve)
    return out


def judge(
    results: BenchmarkResults,
    space: ChannelSpace,
    targets: Sequence[float],
    chosen: Sequence[tuple[str, float] | None],
) -> dict[str, Any]:
    """Each target's chosen network (benchmark key, proxy accuracy as a fraction; ``None`` when
    nothing was feasible) by the benchmark: mean (%), percentile among the feasible networks,
    regret (points) to the best feasible, and the best feasible uniform-width network."""
    uniform = [config_key(space.uniform(r)) for r in space.ratios]
    rows = []
    for t, pick in zip(targets, chosen, strict=True):
        feasible = feasible_means(results, space, t)
        limit = flops_limit(results, space, t)
        ok_uniform = [k for k in uniform if results.flops[results.row[k]] <= limit]
        best_u = max(ok_uniform, key=lambda k: results.mean[results.row[k]], default=None)
        row: dict[str, Any] = {"target": t, "best_acc": float(feasible.max())}
        row["uniform"] = best_u
        row["uniform_acc"] = None if best_u is None else float(results.mean[results.row[best_u]])
        if pick is not None:
            key, proxy_acc = pick
            acc = float(results.mean[results.row[key]])
            row |= {
                "winner": key,
                "proxy_acc": 100 * float(proxy_acc),
                "winner_acc": acc,
                "percentile": percentile(feasible, acc),
                "regret": float(feasible.max()) - acc,
            }
        rows.append(row)
    return {"targets": rows}


def winner_keys(
    space: ChannelSpace, winners: Sequence[Mapping[str, Any]]
) -> list[tuple[str, float] | None]:
    """A search's winners (one a target) as :func:`judge`'s ``chosen``."""
    return [
        None
        if w["best"] is None
        else (config_key(space.config(w["best"]["genes"])), w["best"]["accuracy"])
        for w in winners
    ]


def proxy_picks(
    results: BenchmarkResults,
    space: ChannelSpace,
    targets: Sequence[float],
    keys: Sequence[str],
    scores: Sequence[float],
) -> dict[str, Any]:
    """The proxy's pick among the scored networks at each target, judged (:func:`judge`): a
    random search whose budget is the ``proxy`` step's networks (uniform ones included), the
    pick the feasible network of the highest score (ties to fewer FLOPs, then the earlier)."""
    flops = [float(results.flops[results.row[k]]) for k in keys]
    chosen: list[tuple[str, float] | None] = []
    for t in targets:
        limit = flops_limit(results, space, t)
        ok = [(-s, f, i) for i, (s, f) in enumerate(zip(scores, flops, strict=True)) if f <= limit]
        best = min(ok, default=None)
        chosen.append(None if best is None else (keys[best[2]], scores[best[2]]))
    return judge(results, space, targets, chosen)


def search_markdown(res: Mapping[str, Any]) -> str:
    """The judged winners as a Markdown table."""
    lines = [
        "| FLOPs target | winner | proxy acc. (%) | benchmark mean (%) | percentile among "
        "feasible (%) | regret (points) | best feasible (%) | best feasible uniform (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["targets"]:
        u = "-" if r["uniform"] is None else f"`{r['uniform']}` {r['uniform_acc']:.2f}"
        if "winner" not in r:
            lines.append(
                f"| <= {r['target']:.0%} | none | - | - | - | - | {r['best_acc']:.2f} | {u} |"
            )
            continue
        lines.append(
            f"| <= {r['target']:.0%} | `{r['winner']}` | {r['proxy_acc']:.2f} | "
            f"{r['winner_acc']:.2f} | {r['percentile']:.2f} | {r['regret']:.2f} | "
            f"{r['best_acc']:.2f} | {u} |"
        )
    return "\n".join(lines) + "\n"


def strategies_markdown(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Proxy-scored searches side by side (``runs``: :func:`search_step` results by strategy,
    the paper's ``ga`` among them): per target, scored configs, wall time, the winner's
    benchmark mean, and the scored configs until the proxy's pick was as good (by the benchmark)
    as the GA's final winner."""
    lines = [
        "| FLOPs target | search | scored configs (all targets) | wall time | winner benchmark "
        "mean (%) | scored configs until its pick >= the GA winner's benchmark mean |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ga = runs["ga"]
    for i, g in enumerate(ga["targets"]):
        for label, res in runs.items():
            r = res["targets"][i]
            acc = "-" if "winner" not in r else f"{r['winner_acc']:.2f}"
            until = None if "winner" not in g else to_match(res["picks"][i], g["winner_acc"])
            secs = "-" if res.get("seconds") is None else f"{res['seconds'] / 60:.0f} min"
            scored = res.get("scored", len(res["picks"][i]))
            lines.append(
                f"| <= {g['target']:.0%} | {label} | {scored} | {secs} | {acc} | "
                f"{'never' if until is None else until} |"
            )
    return "\n".join(lines) + "\n"


def knobs_step(
    steps: Steps,
    bench: ProxyBench,
    results: BenchmarkResults,
    proxy: Mapping[str, Any],
    n: int,
    knobs: Mapping[str, Mapping[str, Any]] | None = None,
    pruningnets: Mapping[str, ProxyBench] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """The ``proxy`` step's first ``n`` networks scored with each setting of ``knobs``
    (:data:`KNOBS` unless given) and by each other PruningNet of ``pruningnets`` (e.g. trained
    for fewer epochs; the ``proxy`` step's settings), one resumable sub-step each (in
    ``workers`` processes: :func:`score_jobs`); their rank
    correlations beside the ``proxy`` step's on the same networks (``default``), and
    ``knobs.md``."""
    knobs = KNOBS if knobs is None else knobs
    pruningnets = pruningnets or {}
    keys = list(proxy["keys"][:n])
    levels = flops_levels(results)
    settings = [(name, bench, bench.scorer_config(**o)) for name, o in knobs.items()]
    settings += [(name, b, b.scorer_config()) for name, b in pruningnets.items()]
    table = {"default": rank_correlations(results, keys, proxy["scores"][:n], levels)}
    jobs = [(f"knobs/{name}", b, keys, scfg) for name, b, scfg in settings]
    for (name, _, _), scores in zip(settings, score_jobs(steps, jobs, workers), strict=True):
        table[name] = rank_correlations(results, keys, scores, levels)
    ident = {**bench.identity, "keys": keys, "knobs": {k: dict(v) for k, v in knobs.items()}}
    ident["default_scorer"] = bench.scorer_config().identity()
    ident["pruningnets"] = {k: b.identity["pruningnet"] for k, b in pruningnets.items()}
    res = steps.run("knobs", ident, lambda: {"keys": keys, "correlations": table})
    label = {"default": "the proxy step's settings"}
    label |= {k: f"scorer {dict(v)}" for k, v in knobs.items()}
    label |= {k: f"PruningNet {b.path}" for k, b in pruningnets.items()}
    lines = [
        f"## `{name}` ({label[name]})\n\n" + correlation_markdown(res["correlations"][name])
        for name in label
    ]
    atomic_write_text(steps.root / "knobs.md", "\n".join(lines))
    return res


def compare_markdown(
    results: BenchmarkResults,
    space: ChannelSpace,
    targets: Sequence[float],
    runs: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> str:
    """PruningNet recipes side by side (``runs``: label -> its ``train`` and ``proxy`` step
    results, all on the same networks, else a ``ValueError`` naming the first that differs):
    epochs, training wall time, the max and min networks' validation accuracy, the proxy's rank
    correlations overall and in each band, the Kendall tau of its scores against the first run's
    (how alike two recipes or scorer settings rank the same networks), and the benchmark
    percentile of the proxy's pick at each target (:func:`proxy_picks`)."""
    (first, (_, ref)), *rest = runs.items()
    for label, (_, proxy) in rest:
        if list(proxy["keys"]) != list(ref["keys"]):
            raise ValueError(f"runs {first!r} and {label!r} scored different networks")
    subsets = [r["subset"] for r in ref["correlations"]]
    head = ["recipe", "epochs", "training (min)", "val. max / min (%)"]
    head += [f"tau {s}" for s in subsets] + [f"tau vs `{first}`"]
    head += [f"pick <= {t:.0%}: pct." for t in targets]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, (trained, proxy) in runs.items():
        val = trained.get("val", {})
        cells = [f"`{label}`", str(trained["epochs"]), f"{trained['seconds'] / 60:.0f}"]
        cells.append(f"{100 * val['acc_max']:.1f} / {100 * val['acc_min']:.1f}" if val else "-")
        taus = {r["subset"]: r.get("score_tau") for r in proxy["correlations"]}
        cells += ["-" if taus.get(s) is None else f"{taus[s]:.3f}" for s in subsets]
        cells.append(f"{kendall_tau(proxy['scores'], ref['scores']):.3f}")
        picked = proxy_picks(results, space, targets, proxy["keys"], proxy["scores"])
        cells += [
            f"{r['percentile']:.1f} (`{r['winner']}`)" if "winner" in r else "-"
            for r in picked["targets"]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
