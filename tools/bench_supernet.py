"""Benchmark: the cost of the PruningNet training options, side by side (issue: supernet training).

One training step (the step function of :mod:`metaprune.pruningnet.training`: forward of every
network the step runs, loss, backward, SGD momentum step) on the Channel-Bench-Macro MobileNet
space (3x32x32, 10 classes, full widths) for each variant, interleaved in one run on the same
batch and the same sampled configs at each step (the sampler's generator is seeded per step, as
in training), each variant with its own PruningNet (same seed) and optimiser:

* ``none/layer``: the paper's step (one uniform config, labels only, layer encoding): the base;
* ``sandwich/layer``: the sandwich rule (``train.sandwich=true``: max, sampled and min
  networks), for scale: it also runs the max network;
* ``fullnet-logits/layer``, ``fullnet-stagewise/layer``: full-net supervision
  (``train.distill=fullnet``), which adds the max network's forward and backward;
* ``none/graph``: the graph encoding (``pruningnet=graph``);
* ``flops_uniform/layer``, ``flops_uniform+fullnet-logits/layer``: FLOPs-uniform sampling
  (``train.sampling=flops_uniform``), alone and with in-place distillation.  These draw other
  configs than the base, so their step differs by the sampled networks' cost as well as by the
  sampler's own work; the ratio of mean step times is the training-time ratio to read for them.

Reports each variant's median and mean step time, the median over steps of the per-step ratio to
the base (a disturbance of the shared machine hits both sides of a ratio alike) and the ratio of
the mean step times (what a training's length scales with when the configs differ).  With
``--clock cpu`` (default) it times this process's CPU time, which other jobs on a shared CPU
disturb far less than the wall clock; use one thread.

    OMP_NUM_THREADS=1 python tools/bench_supernet.py --threads 1 --batch 32 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import metaprune as mp
from metaprune.engine import TrainConfig
from metaprune.pruningnet import ConfigSampler, create_pruningnet
from metaprune.pruningnet.training import training_step
from metaprune.space import ChannelSpace

VARIANTS = {
    "none/layer": ({}, "layer"),
    "sandwich/layer": ({"sandwich": True}, "layer"),
    "fullnet-logits/layer": ({"distill": "fullnet", "distill_mode": "logits"}, "layer"),
    "fullnet-stagewise/layer": ({"distill": "fullnet", "distill_mode": "stagewise"}, "layer"),
    "none/graph": ({}, "graph"),
    "flops_uniform/layer": ({"sampling": "flops_uniform"}, "layer"),
    "flops_uniform+fullnet-logits/layer": (
        {"sampling": "flops_uniform", "distill": "fullnet", "distill_mode": "logits"},
        "layer",
    ),
}
"""Variant -> (``train`` options, ``pruningnet.encoding``); the first is the base."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cbm_mobilenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--hidden", type=int, default=32, help="pruningnet.hidden")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    return ap.parse_args(argv)


Step = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], None]
"""``run(x, y, rng)``: one training step of a variant, in place."""


def make_variant(space: ChannelSpace, opts: dict[str, Any], encoding: str, hidden: int) -> Step:
    """``run(x, y, rng)``: one training step of the variant."""
    torch.manual_seed(0)
    pnet = create_pruningnet(space, hidden=hidden, encoding=encoding).train()
    opt = torch.optim.SGD(pnet.parameters(), lr=0.01, momentum=0.9)
    tcfg = TrainConfig(**opts).validate()
    step = training_step(ConfigSampler(space, tcfg.sampling, tcfg.sandwich), tcfg)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> None:
        opt.zero_grad(set_to_none=True)
        step(pnet, x, y, rng, loss_fn).backward()
        opt.step()

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    space = mp.create_space(args.model, stem="cifar", num_classes=10)
    names = [n for n in VARIANTS if n in args.variants]
    runs = {n: make_variant(space, *VARIANTS[n], args.hidden) for n in names}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *space.input_shape, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    times: dict[str, list[float]] = {n: [] for n in names}
    for k in range(args.warmup + args.steps):
        for n in names:
            t0 = clock()
            runs[n](x, y, np.random.default_rng([0, k]))
            if k >= args.warmup:
                times[n].append(clock() - t0)
    base = names[0]
    rows = {
        n: {
            "median_s": statistics.median(times[n]),
            "mean_s": statistics.fmean(times[n]),
            "ratio": statistics.median(a / b for a, b in zip(times[n], times[base], strict=True)),
            "mean_ratio": statistics.fmean(times[n]) / statistics.fmean(times[base]),
        }
        for n in names
    }
    print(f"{args.model}, batch {args.batch}, {args.steps} steps, {args.threads} thread(s), "
          f"{args.clock} clock, torch {torch.__version__}")  # fmt: skip
    print(f"| variant | median step (s) | mean step (s) | median ratio to {base} | mean ratio |")
    print("|---|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['median_s']:.3f} | {r['mean_s']:.3f} | {r['ratio']:.2f} | "
              f"{r['mean_ratio']:.2f} |")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
