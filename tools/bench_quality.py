"""Benchmark: does the proxy rank networks, and does the search find good ones (issue part 3)?

MetaPruning (Liu et al., ICCV 2019) on a Channel-Bench-Macro space, every network judged by the
benchmark's stand-alone accuracy (:mod:`metaprune.benchmarks.oracle` and
:mod:`metaprune.benchmarks.quality` hold the steps; this is their command line).  Steps, in
order, each resumable and skipped when done (outputs under ``<out-root>/<name>/``; a step made
from other inputs is refused, naming them):

* ``oracle``: the paper's GA and random search (same budget; ``--oracle-algorithms`` adds the
  RL controller and the GA with a surrogate) scored by the benchmark at each FLOPs target,
  ``--oracle-seeds`` seeds each (``oracle.md``, ``oracle.png``); needs no data,
* ``train``: a PruningNet with the project's ``train`` on ``--data-root`` (CIFAR-10, JPEG q75),
* ``proxy``: ``--configs`` random networks and the uniform ones scored by the search's proxy
  scorer (racing off); Kendall tau / Spearman rho against the benchmark (``proxy.md``,
  ``proxy.png``),
* ``search``: the paper's GA with the proxy at each target, winners judged (``search.md``), and
  the strategies of ``--search-strategies`` beside it (``search_<strategy>.md``; scored configs
  until their pick is as good as the GA's winner: ``search_strategies.md``),
* ``knobs``: the proxy figures on ``--knob-configs`` networks for other scorer settings and
  for PruningNets trained shorter (``--knob-steps``: steps an epoch) or longer
  (``--knob-epochs``) (``knobs.md``).

``--workers N`` runs the PruningNets' trainings and the oracle step side by side first (N
processes, one per core, the main training started first), then scores the proxy's and the
knobs' chunks N at a time.  Each invocation's wall time per phase is printed and appended to
``timings.json``.  The defaults are the sizes of the CPU budget (2 cores: add ``--workers 2``;
the default is 1): 1 epoch, 200 random networks, 25 networks a knob, a half-length training
knob, the GA at 12 x 3.

``--compare NAME ...`` runs nothing: it puts the finished ``train`` and ``proxy`` steps of those
runs (e.g. one run per PruningNet recipe, each given by ``--set``) side by side in one table.

Usage: ``python tools/bench_quality.py --results PATH/Results_MobileNet.json --data-root
data/cifar10-jpeg [--steps oracle train proxy search knobs] [--epochs 1] [--configs 200]
[--workers 2] [--set KEY=VALUE ...]`` (``--set`` adds Hydra overrides of the project's config,
e.g. ``train.batch_size=256``).  Tables are printed as Markdown and written beside the results.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from metaprune.benchmarks import BenchmarkResults, load_results
from metaprune.benchmarks.oracle import (
    DEFAULT_STRATEGIES,
    oracle_markdown,
    oracle_step,
    strategy_overrides,
)
from metaprune.benchmarks.quality import (
    ProxyBench,
    compare_markdown,
    correlation_markdown,
    knobs_step,
    proxy_step,
    search_markdown,
    search_step,
    side_by_side,
    strategies_markdown,
    train_step,
)
from metaprune.benchmarks.steps import Steps
from metaprune.config import build_space
from metaprune.engine.identity import file_hash
from metaprune.io import atomic_write_json, atomic_write_text, read_json
from metaprune.schema import load_config
from metaprune.search import SearchConfig

STEPS = ("oracle", "train", "proxy", "search", "knobs")
BENCHMARK_INPUT = ((3, 32, 32), 10)
"""The benchmark's networks: 3x32x32 input, 10 classes."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="the benchmark's results JSON file")
    ap.add_argument("--data-root", help="CIFAR-10 folder (JPEG or pickle layout) for train..knobs")
    ap.add_argument("--name", default="cbm_mobilenet_cifar10", help="output folder name")
    ap.add_argument("--out-root", default="outputs/bench_quality")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--model", default="cbm_mobilenet", help="the benchmark's family")
    ap.add_argument("--data", default="cifar10", help="the project's data group")
    ap.add_argument("--targets", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--oracle-seeds", type=int, default=10)
    ap.add_argument("--oracle-population", type=int, default=50, help="paper: 50")
    ap.add_argument("--oracle-generations", type=int, default=20, help="paper: 20")
    ap.add_argument(
        "--oracle-algorithms",
        nargs="+",
        default=list(DEFAULT_STRATEGIES),
        choices=list(strategy_overrides(1)),
        help="strategies the oracle step compares (ga+surrogate: the GA scoring a fifth)",
    )
    ap.add_argument("--epochs", type=int, default=1, help="PruningNet epochs (CPU budget)")
    ap.add_argument("--configs", type=int, default=200, help="random networks the proxy scores")
    ap.add_argument("--knob-configs", type=int, default=25, help="networks per knob setting")
    ap.add_argument(
        "--knob-epochs",
        nargs="*",
        type=int,
        default=[],
        help="knobs: also PruningNets trained for these epochs (each a training run)",
    )
    ap.add_argument(
        "--knob-steps",
        nargs="*",
        type=int,
        default=[176],
        help="knobs: also PruningNets trained --epochs epochs of at most this many steps each "
        "(the schedule over the fewer steps; CIFAR-10's 45,000 training images at batch 128 "
        "are 352 steps an epoch, so 176 is half the training)",
    )
    ap.add_argument("--search-population", type=int, default=12, help="paper: 50")
    ap.add_argument("--search-generations", type=int, default=3, help="paper: 20")
    ap.add_argument(
        "--search-strategies",
        nargs="+",
        default=["ga"],
        help="search: strategies beside the paper's ga, each its own run (e.g. ga+surrogate)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the proxy's random networks")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes side by side, one per core: the PruningNets' trainings and the oracle "
        "step; the proxy's and the knobs' scoring chunks",
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="NAME",
        help="only report: the train and proxy steps of these finished runs side by side "
        "(compare.md under --out-root)",
    )
    return ap.parse_args(argv)


def evolution(population: int, generations: int) -> dict[str, int]:
    """The paper's GA proportions at another population: half mutation, half crossover
    children, the top fifth as parents (paper: 25 + 25 of 50, top 10)."""
    half = population // 2
    return {
        "population": population,
        "generations": generations,
        "parents": max(2, population // 5),
        "mutation_children": half,
        "crossover_children": half,
    }


def compose(args: argparse.Namespace) -> Any:
    """The project's config for the train..knobs steps: the family, ``--data`` at ``--data-root``,
    ``--epochs``, the proxy search's size, then ``--set``."""
    over = [f"model={args.model}", f"data={args.data}", f"train.epochs={args.epochs}"]
    if args.data_root:
        over.append(f"data.root={args.data_root}")
    evo = evolution(args.search_population, args.search_generations)
    over += [f"search.{k}={v}" for k, v in evo.items()]
    return load_config(over + list(args.set))


def trainings(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """The PruningNets the steps need, by step name: ``train`` (``cfg``), then for the knobs
    step one trained ``--knob-epochs`` epochs (``train_epochs_<n>``) or with ``--knob-steps``
    steps an epoch (``train_steps_<n>``)."""
    runs = {"train": cfg}
    if "knobs" in args.steps:
        for e in sorted(set(args.knob_epochs) - {args.epochs}):
            runs[f"train_epochs_{e}"] = OmegaConf.merge(cfg, {"train": {"epochs": e}})
        for n in sorted(set(args.knob_steps)):
            runs[f"train_steps_{n}"] = OmegaConf.merge(cfg, {"train": {"max_steps_per_epoch": n}})
    return runs


class Clock:
    """Wall time of each phase of this invocation, appended to ``<root>/timings.json`` (one
    entry an invocation: earlier ones are kept) as each phase ends."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.path = root / "timings.json"
        self.entry: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "steps": list(args.steps),
            "workers": args.workers,
            "phases": {},
        }
        self.earlier = read_json(self.path) if self.path.is_file() else []
        self.t0 = self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """End ``phase`` now and store the entry."""
        now = time.perf_counter()
        self.entry["phases"][phase] = round(now - self.last, 1)
        self.entry["total"] = round(now - self.t0, 1)
        self.last = now
        atomic_write_json(self.path, [*self.earlier, self.entry])

    def markdown(self) -> str:
        """This invocation's phases as a Markdown table (minutes)."""
        rows = [f"| {k} | {v / 60:.1f} |" for k, v in self.entry["phases"].items()]
        total = self.entry.get("total", 0.0) / 60
        return (
            "| phase | minutes |\n|---|---:|\n" + "\n".join(rows) + f"\n| total | {total:.1f} |\n"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen steps; returns each step's result by name."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    results: BenchmarkResults = load_results(args.results)
    results_id = {"path": str(Path(args.results)), "sha256": file_hash(args.results)}
    steps = Steps(Path(args.out_root) / args.name)
    cfg = compose(args)
    space = build_space(cfg.model, cfg.get("space"), *BENCHMARK_INPUT)
    out: dict[str, Any] = {}
    if args.compare:
        done = {n: Steps(Path(args.out_root) / n) for n in args.compare}
        runs = {n: (s.result("train"), s.result("proxy")) for n, s in done.items()}
        text = compare_markdown(results, space, args.targets, runs)
        atomic_write_text(Path(args.out_root) / "compare.md", text)
        print(f"## PruningNet recipes side by side\n\n{text}")
        return {"compare": text}
    clock = Clock(steps.root, args)
    later = [s for s in STEPS[1:] if s in args.steps]
    pruningnets = trainings(args, cfg) if later else {}
    jobs = {name: (train_step, steps, c, name) for name, c in pruningnets.items()}
    if "oracle" in args.steps:
        evo = evolution(args.oracle_population, args.oracle_generations)
        scfg = SearchConfig(**evo, tensorboard=False)
        jobs["oracle"] = (oracle_step, steps, space, results, results_id, args.targets)
        jobs["oracle"] += (args.oracle_seeds, scfg, args.oracle_algorithms)
    done = side_by_side(jobs, args.workers)
    clock.lap("oracle and trainings" if later else "oracle")
    if "oracle" in done:
        out["oracle"] = done["oracle"]
        print(
            f"## Oracle search ({steps.root / 'oracle.png'})\n\n{oracle_markdown(done['oracle'])}"
        )
    if not later:
        return out
    out["train"] = done["train"]
    print(f"## PruningNet: {out['train']['pruningnet']}\n")
    bench = ProxyBench(cfg, out["train"]["pruningnet_file"], space)
    if "proxy" in later or "knobs" in later:
        out["proxy"] = proxy_step(
            steps, bench, results, args.configs, args.seed, args.targets, args.workers
        )
        clock.lap("proxy")
        rows = out["proxy"]["correlations"]
        print(f"## Proxy against the benchmark ({steps.root / 'proxy.png'})\n")
        print(correlation_markdown(rows))
    if "search" in later:
        names = ["ga", *(s for s in args.search_strategies if s != "ga")]
        runs = {s: search_step(steps, cfg, bench, results, args.targets, s) for s in names}
        clock.lap("search")
        out["search"] = runs["ga"]
        print(f"## Proxy-scored search\n\n{search_markdown(out['search'])}")
        if len(runs) > 1:
            out["search_strategies"] = runs
            text = strategies_markdown(runs)
            atomic_write_text(steps.root / "search_strategies.md", text)
            print(f"## Proxy-scored strategies\n\n{text}")
    if "knobs" in later:
        others = {
            name.removeprefix("train_"): ProxyBench(c, done[name]["pruningnet_file"], space)
            for name, c in pruningnets.items()
            if name != "train"
        }
        out["knobs"] = knobs_step(
            steps,
            bench,
            results,
            out["proxy"],
            args.knob_configs,
            pruningnets=others,
            workers=args.workers,
        )
        clock.lap("knobs")
        print(f"## What moves the proxy: {steps.root / 'knobs.md'}\n")
        print((steps.root / "knobs.md").read_text())
    print(f"## Wall time of this invocation\n\n{clock.markdown()}")
    return out


if __name__ == "__main__":
    main()
