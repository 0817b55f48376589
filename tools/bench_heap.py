"""Benchmark: a CPU job with the heap kept for reuse against glibc's malloc defaults.

Execution only (:mod:`metaprune.engine.heap`), not part of MetaPruning (Liu et al., ICCV 2019).
Each round runs the same job twice, each in a fresh process, in turn: with the heap kept (the
project's default) and with ``METAPRUNE_KEEP_HEAP=0`` (glibc as it is).  The job is the quality
benchmark's work on the Channel-Bench-Macro MobileNet space (``cbm_mobilenet``, CIFAR-10 at
``--data-root``): ``--steps`` steps of the project's ``train`` (batch 128, one validation batch),
then ``--configs`` random networks scored by the search's proxy scorer (racing off, the default
recalibration and split).  The trainer's images a second, the process's wall time per part,
user and system CPU time, minor page faults and peak resident memory (``os.wait4``) are reported
per round, with the ratio of the medians; the training loss and the proxy scores are compared
across all runs (the setting must not change results).

    python tools/bench_heap.py --data-root data/cifar10-jpeg --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaprune.io import atomic_write_text

MODES = {"kept": "1", "glibc": "0"}
"""Each mode's ``METAPRUNE_KEEP_HEAP``."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True, help="CIFAR-10 folder (JPEG or pickle layout)")
    ap.add_argument("--steps", type=int, default=24, help="PruningNet training steps")
    ap.add_argument("--configs", type=int, default=4, help="networks the proxy scores")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="outputs/bench_heap")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # a run directory: do the job there
    return ap.parse_args(argv)


def job(args: argparse.Namespace) -> dict[str, Any]:
    """The measured job, in this process: train, then score; wall seconds of each."""
    import numpy as np

    from metaprune.benchmarks.keys import config_key
    from metaprune.benchmarks.quality import ProxyBench
    from metaprune.config import build_space
    from metaprune.pruningnet import PRUNINGNET_FILE
    from metaprune.schema import load_config
    from metaprune.train import train

    over = ["model=cbm_mobilenet", "data=cifar10", f"data.root={args.data_root}"]
    over += ["train.epochs=1", f"train.max_steps_per_epoch={args.steps}", "train.val_batches=1"]
    cfg = load_config(over)
    out = Path(args.child)
    t0 = time.perf_counter()
    metrics = train(cfg, out)
    t1 = time.perf_counter()
    space = build_space(cfg.model, cfg.get("space"), (3, 32, 32), 10)
    rng = np.random.default_rng(0)
    keys = [config_key(space.sample(rng)) for _ in range(args.configs)]
    bench = ProxyBench(cfg, out / PRUNINGNET_FILE, space)
    scores = bench.score(keys, bench.scorer_config())
    t2 = time.perf_counter()
    last = metrics["history"][-1]
    return {
        "train_s": t1 - t0,
        "img_per_s": last["img_per_s"],
        "score_s": t2 - t1,
        "train_loss": last["train_loss"],
        "scores": scores,
    }


def measure(args: argparse.Namespace, mode: str, run: Path) -> dict[str, Any]:
    """The job in a fresh process under ``mode``: its result and its resource use."""
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "METAPRUNE_KEEP_HEAP": MODES[mode]}
    cmd = [sys.executable, __file__, "--data-root", args.data_root, "--child", str(run)]
    cmd += ["--steps", str(args.steps), "--configs", str(args.configs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    _, status, use = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the {mode} job failed (exit {proc.returncode})")
    res = json.loads(stdout.strip().splitlines()[-1])
    return {
        **res,
        "wall_s": time.perf_counter() - t0,
        "user_s": use.ru_utime,
        "sys_s": use.ru_stime,
        "minor_faults": use.ru_minflt,
        "max_rss_mib": use.ru_maxrss / 1024,
    }


def markdown(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    """One row per round and mode, then the kept / glibc ratios of the medians."""
    head = (
        "| round | heap | training img/s | train() (s) | scoring s/network | wall (s) | user (s) "
        "| system (s) | minor page faults | peak RSS (MiB) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['mode']} | {r['img_per_s']:.1f} | {r['train_s']:.1f} "
            f"| {r['score_s'] / args.configs:.1f} "
            f"| {r['wall_s']:.1f} | {r['user_s']:.1f} | {r['sys_s']:.1f} "
            f"| {r['minor_faults'] / 1e6:.2f} M | {r['max_rss_mib']:.0f} |"
        )

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["mode"] == mode)

    keys = ("img_per_s", "train_s", "score_s", "wall_s")
    ratio = {k: median("kept", k) / median("glibc", k) for k in keys}
    same = len({json.dumps([r["train_loss"], r["scores"]]) for r in rows}) == 1
    tail = (
        f"\nMedians, kept / glibc: training images a second {ratio['img_per_s']:.2f}x; time of "
        f"train() {ratio['train_s']:.2f}, of scoring {ratio['score_s']:.2f}, of the whole job "
        f"{ratio['wall_s']:.2f}.  Training loss and proxy "
        f"scores {'identical' if same else 'DIFFER'} in every run.\n"
    )
    return head + "\n".join(lines) + "\n" + tail


def main(argv: Sequence[str] | None = None) -> str | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(job(args)))
        return None
    out = Path(args.out)
    rows = []
    for i in range(args.rounds):
        for mode in MODES:
            rows.append({"round": i + 1, "mode": mode, **measure(args, mode, out / mode)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    text = markdown(rows, args)
    atomic_write_text(out / "heap.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
