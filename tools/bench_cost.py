"""Benchmark: channel configs counted per second by the exact cost model, on one CPU core.

MetaPruning's evolutionary search (Liu et al., ICCV 2019, sec. 3.3) checks the FLOPs constraint of
every candidate, so counting must be cheap.  For each registered family (default options) this
times, side by side in one run:

* ``count_flops`` / ``count_params`` called once per config (the search's per-candidate call),
* the vectorised numpy path called with one config (``flops_many([c])``), for the ratio,
* ``flops_many`` / ``params_many`` over a batch of configs.

Usage: ``python tools/bench_cost.py [--configs 10000] [--single 5000] [--repeat 3]``; prints a
Markdown table.  Threads are pinned to 1 (numpy and torch) so the figures are per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metaprune import count_flops, count_params, create_space, list_models  # noqa: E402
from metaprune.cost import cost_model  # noqa: E402
from metaprune.space import ChannelSpace  # noqa: E402


def best_rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Items per second of ``fn`` (which processes ``n`` items), best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_family(space: ChannelSpace, args: argparse.Namespace) -> list[float]:
    """Configs per second of each way of counting, for the table's columns."""
    model = cost_model(space)
    rng = np.random.default_rng(0)
    batch = [space.sample(rng) for _ in range(args.configs)]
    single = batch[: args.single]
    n, r = len(single), args.repeat
    return [
        best_rate(lambda: [count_flops(space, c) for c in single], n, r),
        best_rate(lambda: [count_params(space, c) for c in single], n, r),
        best_rate(lambda: [model.flops_many([c]) for c in single], n, r),
        best_rate(lambda: model.flops_many(batch), len(batch), r),
        best_rate(lambda: model.params_many(batch), len(batch), r),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=10_000, help="batch size for flops_many")
    ap.add_argument("--single", type=int, default=5_000, help="configs for the one-by-one calls")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs (best is reported)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    print(
        "| family | genes | layers | count_flops /s | count_params /s | numpy path, 1 config /s "
        "| flops_many /s | params_many /s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in list_models():
        space = create_space(name)
        cells = " | ".join(f"{r:,.0f}" for r in bench_family(space, args))
        print(f"| {name} | {len(space)} | {len(space.arch.layers)} | {cells} |")


if __name__ == "__main__":
    main()
