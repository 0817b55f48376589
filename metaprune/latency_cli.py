"""``metaprune latency build|validate``: measure a latency look-up table and validate it.

The LUT-based latency constraint of MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3), measured
on the machine at hand; see :mod:`metaprune.cost.latency`.  ``build`` times every layer entry of a
model family's channel space and fits the whole-network overhead; ``validate`` measures random
configs end to end and reports MAPE, the share within +-10% and Kendall tau, with a
predicted-vs-measured scatter plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaprune.cost.latency import (
    CLOCKS,
    MODES,
    RUNTIMES,
    SAMPLINGS,
    TIMING,
    LatencyModel,
    LatencyTable,
    build_latency_table,
    validate_latency,
)
from metaprune.io import atomic_write_json
from metaprune.models import create_space, space_from_description
from metaprune.space import ChannelSpace


def space_of_table(table: LatencyTable) -> ChannelSpace:
    """The channel space a table was measured for, rebuilt from its description."""
    return space_from_description(table.space_desc, "latency table")


def plot_validation(result: dict[str, Any], path: str | Path, title: str) -> Path:
    """Scatter of predicted vs measured latency (both modes) with the +-10% band, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = result["measured_ms"]
    every = [*measured, *(v for r in result["modes"].values() for v in r["predicted_ms"])]
    lo, hi = min(every) * 0.9, max(every) * 1.1
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", lw=0)
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
    for mode, marker in zip(MODES, ("o", "x"), strict=True):
        r = result["modes"][mode]
        label = f"{mode}: MAPE {r['mape']:.1f}%, tau {r['tau']:.2f}"
        ax.scatter(measured, r["predicted_ms"], s=12, marker=marker, label=label)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)", ylabel="predicted (ms)")
    if "repeatability" in result:
        rep = result["repeatability"]
        title += f"\nrepeat vs repeat: MAPE {rep['mape']:.1f}%, tau {rep['tau']:.2f}"
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaprune latency", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="measure a latency table for a model family's space")
    b.add_argument("--model", required=True, help="model family, e.g. mobilenet_v2, resnet20")
    b.add_argument("--stem", default=None, help="cifar or imagenet (family default)")
    b.add_argument("--width-mult", type=float, default=1.0)
    b.add_argument("--input-size", type=int, default=None)
    b.add_argument("--num-classes", type=int, default=None)
    b.add_argument("--in-chans", type=int, default=3)
    b.add_argument("--choices", type=float, nargs="+", default=None, help="width ratios")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    b.add_argument("--runtime", default="torch", choices=RUNTIMES)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--channels-last", action="store_true")
    b.add_argument("--warmup", type=int, default=TIMING["warmup"])
    b.add_argument("--repeats", type=int, default=TIMING["repeats"], help="calls per round")
    b.add_argument("--rounds", type=int, default=TIMING["rounds"], help="interleaved rounds")
    b.add_argument(
        "--settle",
        type=int,
        default=TIMING["settle"],
        help="untimed calls before each runner's timed ones",
    )
    b.add_argument(
        "--clock",
        default=TIMING["clock"],
        choices=CLOCKS,
        help="wall clock, or the thread's CPU time (CPU, 1 thread; for shared machines)",
    )
    b.add_argument("--n-fit", type=int, default=10, help="networks to fit the overhead on")
    b.add_argument("--out", required=True, help="table JSON (resumed if partial)")
    v = sub.add_parser("validate", help="compare predictions with end-to-end measurements")
    v.add_argument("--table", required=True)
    v.add_argument("--n", type=int, default=50, help="random configs to measure")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--rounds", type=int, default=None, help="timing rounds (table's default)")
    v.add_argument("--passes", type=int, default=2, help="independent measurement passes")
    v.add_argument("--refit", action="store_true", help="refit the overhead on fresh timings")
    v.add_argument(
        "--sampling",
        default="uniform",
        choices=SAMPLINGS,
        help="uniform genes (configs near the mean) or spread over the latency range",
    )
    v.add_argument("--json", default=None, help="write the full result here")
    v.add_argument("--plot", default=None, help="write a predicted-vs-measured PNG here")
    return p


def _build(a: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"width_mult": a.width_mult, "in_chans": a.in_chans}
    for k in ("stem", "input_size", "num_classes"):
        if getattr(a, k) is not None:
            opts[k] = getattr(a, k)
    space = create_space(a.model, choices=a.choices, **opts)

    def progress(done: int, total: int) -> None:
        print(f"  measured {done}/{total} entries", file=sys.stderr, flush=True)

    table = build_latency_table(
        space,
        device=a.device,
        runtime=a.runtime,
        batch=a.batch,
        threads=a.threads,
        channels_last=a.channels_last,
        warmup=a.warmup,
        repeats=a.repeats,
        rounds=a.rounds,
        clock=a.clock,
        settle=a.settle,
        n_fit=a.n_fit,
        path=a.out,
        progress=progress,
    )
    return {
        "table": str(a.out),
        "device": table.device,
        "runtime": table.runtime,
        "entries": len(table.entries),
        "layers": len(space.arch.layers),
        "build_seconds": round(table.build_seconds, 1),
        "fit": {k: v for k, v in table.fit.items() if k != "nets"},
    }


def _validate(a: argparse.Namespace) -> dict[str, Any]:
    table = LatencyTable.load(a.table)
    space = space_of_table(table)
    model = LatencyModel(table, space)
    t0 = time.perf_counter()
    result = validate_latency(
        model,
        n=a.n,
        seed=a.seed,
        rounds=a.rounds,
        passes=a.passes,
        refit=a.refit,
        sampling=a.sampling,
    )
    result.update(
        table=str(a.table),
        family=table.family,
        device=table.device,
        runtime=table.runtime,
        batch=table.batch,
        threads=table.threads,
        seconds=round(time.perf_counter() - t0, 1),
    )
    if a.json:
        atomic_write_json(a.json, result)
    if a.plot:
        title = f"{table.family} {table.input_shape[1]}px, {table.runtime}, {table.device}"
        plot_validation(result, a.plot, title)
    summary = {k: v for k, v in result.items() if k not in ("measured_ms", "configs", "modes")}
    if "repeatability" in result:
        summary["repeatability"] = {k: round(v, 3) for k, v in result["repeatability"].items()}
    summary["modes"] = {
        m: {k: round(v, 3) for k, v in r.items() if k != "predicted_ms"}
        for m, r in result["modes"].items()
    }
    return summary


def latency_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metaprune latency build|validate``; prints a JSON summary."""
    a = _parser().parse_args(argv)
    summary = _build(a) if a.cmd == "build" else _validate(a)
    print(json.dumps(summary, indent=2))
    return 0
