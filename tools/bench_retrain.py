"""Benchmark: retraining from scratch vs from the PruningNet's weights, and export costs.

``init`` (default): trains a small PruningNet on a Fashion-MNIST subset (``metaprune.train``), then
retrains one config (every gene at ``--ratio``) for the same budget three ways, side by side in one
run: ``scratch`` (the paper), ``inherit`` (start from ``pnet.generate(config)``) and ``kd``
(scratch, distilled from the retrained max-width network as teacher).  Reports test accuracy after
each retraining epoch and the wall time of each run.

``export``: wall time of each export format (TorchScript, ``torch.export``, ONNX with the
TorchScript-based and the dynamo exporter) on one network, formats interleaved over ``--reps``
rounds; medians and the ratio to the TorchScript-based ONNX export.

    python tools/bench_retrain.py init --threads 2
    python tools/bench_retrain.py export --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import metaprune as mp
from metaprune.export import export_model
from metaprune.retrain import retrain
from metaprune.train import train


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": {"name": "mobilenet_v2", "stem": "imagenet", "width_mult": args.width},
        "space": {"choices": [round(0.25 + 0.125 * i, 3) for i in range(7)]},
        "data": {
            "name": "fashion_mnist",
            "train_limit": args.train_limit,
            "search_limit": 1000,
            "test_limit": args.test_limit,
        },
        "pruningnet": {"hidden": 32},
        "optim": {"lr": args.lr, "weight_decay": 4e-5},
        "sched": {"name": "cosine", "warmup_epochs": 0.2},
        "train": {
            "epochs": args.pnet_epochs,
            "batch_size": 128,
            "eval_batch_size": 500,
            "progress": False,
            "val_batches": 2,
        },
    }


def bench_init(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = base_config(args)
    t0 = time.perf_counter()
    tr = train(cfg, out / "train")
    t_train = time.perf_counter() - t0
    print(f"PruningNet: {args.pnet_epochs} epochs in {t_train:.0f} s; last val {tr['val']}")

    def run(label: str, **group: Any) -> dict[str, Any]:
        c = dict(cfg)
        c["train"] = {**cfg["train"], "epochs": args.epochs}
        c["retrain"] = {
            "uniform": args.ratio,
            "export": False,
            "latency_repeats": 0,
            **group,
        }
        t = time.perf_counter()
        r = retrain(c, out / label)
        r["wall_s"] = time.perf_counter() - t
        return r

    teacher = run("teacher_max", uniform=1.0)
    runs = {
        "scratch": run("scratch"),
        "inherit": run("inherit", init="inherit", pruningnet=str(out / "train")),
        "kd": run("kd", kd={"teacher": str(out / "teacher_max" / "export")}),
    }
    print(f"teacher (uniform 1.0): test accuracy {teacher['test_accuracy']:.4f}")
    print(f"config: every gene at {args.ratio}; {runs['scratch']['flops']:,} MACs")
    print("| init | val acc per epoch (search split) | test accuracy | wall s |")
    print("|---|---|---|---|")
    for name, r in runs.items():
        vals = ", ".join(f"{h['val/acc']:.3f}" for h in r["history"])
        print(f"| {name} | {vals} | {r['test_accuracy']:.4f} | {r['wall_s']:.0f} |")
    summary = {k: {"test_accuracy": r["test_accuracy"]} for k, r in runs.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def bench_export(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    space = mp.create_space(
        "mobilenet_v2", stem="imagenet", width_mult=args.width, input_size=28, in_chans=1
    )
    config = space.uniform(0.5, nearest=True)
    model = mp.build_pruned(space, config).eval()
    kinds = {
        "torchscript": {"formats": ["torchscript"]},
        "torch.export": {"formats": ["export"]},
        "onnx (torchscript exporter)": {"formats": ["onnx"]},
        "onnx (dynamo exporter)": {"formats": ["onnx"], "onnx_exporter": "dynamo"},
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, space, config, tmp)  # warm-up: imports, first compilations
        export_model(model, space, config, tmp, formats=["onnx"], onnx_exporter="dynamo")
        for _ in range(args.reps):
            for name, kw in kinds.items():
                t = time.perf_counter()
                export_model(model, space, config, tmp, **kw)
                times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["onnx (torchscript exporter)"])
    print(f"{space.family} width {args.width}, {mp.count_flops(space, config):,} MACs")
    print("| format | median s | ratio to onnx (torchscript exporter) |")
    print("|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {med / ref:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["init", "export"], nargs="?", default="init")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=float, default=0.5, help="MobileNetV2 width_mult")
    ap.add_argument("--ratio", type=float, default=0.5, help="width ratio of the retrained net")
    ap.add_argument("--train-limit", type=int, default=6000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--pnet-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="retraining epochs")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="outputs/bench_retrain")
    args = ap.parse_args()
    (bench_init if args.what == "init" else bench_export)(args)


if __name__ == "__main__":
    main()
