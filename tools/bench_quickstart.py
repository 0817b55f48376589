"""Benchmark: candidate model families for the quick-start (``experiment=quickstart``).

The quick-start must show MetaPruning working on 28x28 Fashion-MNIST in minutes, so its space
needs a network that learns (>= 90 % test accuracy at full width within the quick-start's
retraining budget) and in which channel allocation matters (several stages at different
resolutions).  For each candidate (a ``model`` override of the quick-start) this retrains the
full-width network with the quick-start's own retraining recipe (``retrain`` of
``space.max()``), one candidate at a time on one thread, and reports its stage resolutions,
FLOPs, test accuracy and wall time.  Results go to ``outputs/bench_quickstart/`` (each
candidate's retrain directory resumes, its ``result.json`` is reused).

    OMP_NUM_THREADS=1 python tools/bench_quickstart.py
    OMP_NUM_THREADS=1 python tools/bench_quickstart.py --only resnet20_w0.5 --set data.augment=true
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metaprune.config import build_space
from metaprune.data import build_datasets
from metaprune.models import build_pruned
from metaprune.retrain import retrain
from metaprune.schema import load_config

CANDIDATES = {
    "resnet20_w0.5": ["model=resnet20", "model.width_mult=0.5"],
    "resnet20_w1.0": ["model=resnet20", "model.width_mult=1.0"],
    "mobilenet_v2_cifar_w0.5": ["model=mobilenet_v2", "model.stem=cifar", "model.width_mult=0.5"],
}


def stage_sizes(model: torch.nn.Module, shape: tuple[int, ...]) -> list[int]:
    """The distinct spatial sides the convolutions of ``model`` run at, largest first."""
    sides: set[int] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sides.add(int(out.shape[-1])))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sorted(sides, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. retrain.epochs=3")
    ap.add_argument("--out", default="outputs/bench_quickstart")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tag = "-".join(s.replace("=", "").replace(".", "") for s in args.set) or "default"
    rows = []
    for name in args.only:
        cfg = load_config(["experiment=quickstart", *CANDIDATES[name], *args.set])
        data = build_datasets(cfg.data)
        space = build_space(cfg.model, cfg.space, data.input_shape, data.num_classes)
        start = time.perf_counter()
        res = retrain(cfg, Path(args.out) / tag / name, space.max())
        row = {
            "candidate": name,
            "overrides": [*CANDIDATES[name], *args.set],
            "sides": stage_sizes(build_pruned(space, space.max()), space.input_shape),
            "mflops": res["flops"] / 1e6,
            "test_accuracy": res["test_accuracy"],
            "wall_s": time.perf_counter() - start,  # ~0 when the result was reused
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| candidate | sides (px) | MFLOPs | test acc | wall s |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['candidate']} | {'/'.join(map(str, r['sides']))} | {r['mflops']:.2f} "
            f"| {r['test_accuracy']:.4f} | {r['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
