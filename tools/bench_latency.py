"""Build and validate CPU latency tables for MobileNetV2 and ResNet-20 (CIFAR stem, 32x32).

For each model: build the table (resumed from ``--out-dir`` when a partial or finished one is
there), measure ``--n`` random configs end to end for each ``--sampling`` (uniform genes, or
spread over the latency range), and report the table build time, MAPE, the share of configs
within +-10% and Kendall tau for both predictor modes; writes the scatter plot PNG to
``--plot-dir`` and the full results JSON to ``--out-dir``.

    python tools/bench_latency.py --clock cpu --settle 1 --n 50 --sampling uniform spread
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from metaprune.cost.latency import (
    CLOCKS,
    SAMPLINGS,
    LatencyModel,
    build_latency_table,
    validate_latency,
)
from metaprune.io import atomic_write_json
from metaprune.latency_cli import plot_validation
from metaprune.models import create_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2"])
    p.add_argument("--clock", default="cpu", choices=CLOCKS)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--rounds", type=int, default=100, help="timing rounds of the validation")
    p.add_argument("--table-rounds", type=int, default=50, help="timing rounds of each entry")
    p.add_argument("--passes", type=int, default=2, help="independent validation passes")
    p.add_argument("--refit", action="store_true", help="refit the overhead before validating")
    p.add_argument("--settle", type=int, default=1, help="untimed calls per runner and round")
    p.add_argument("--sampling", nargs="+", default=["uniform"], choices=SAMPLINGS)
    p.add_argument("--out-dir", default="outputs/latency")
    p.add_argument("--plot-dir", default="docs")
    a = p.parse_args()
    rows = []
    for name in a.models:
        space = create_space(name, stem="cifar")
        tag = f"cpu_{name}{f'_settle{a.settle}' * bool(a.settle)}"
        tag += f"_r{a.table_rounds}"
        table_path = Path(a.out_dir) / f"{tag}.json"
        table = build_latency_table(
            space, clock=a.clock, settle=a.settle, rounds=a.table_rounds, path=table_path
        )
        model = LatencyModel(table, space)
        for sampling in a.sampling:
            result = validate_latency(
                model,
                n=a.n,
                seed=0,
                rounds=a.rounds,
                passes=a.passes,
                refit=a.refit,
                sampling=sampling,
            )
            result.update(family=name, device=table.device, build_seconds=table.build_seconds)
            run = f"{tag}_{sampling}{'_refit' * a.refit}"
            atomic_write_json(Path(a.out_dir) / f"validate_{run}.json", result)
            fit = "refit" if a.refit else "build-time fit"
            title = f"{name} 32px, CPU 1 thread, batch 1\n{sampling} configs, {fit}"
            plot_validation(result, Path(a.plot_dir) / f"latency_{run}.png", title)
            rep = result["repeatability"] if a.passes >= 2 else None
            head = f"| {name} | {sampling} | {len(table.entries)} | {table.build_seconds:.0f}"
            if rep:
                rows.append(
                    f"{head} | repeat vs repeat | {rep['mape']:.2f} | {rep['within10']:.0f} "
                    f"| {rep['tau']:.3f} | {rep['max_ape']:.1f} |"
                )
            for mode, r in result["modes"].items():
                rows.append(
                    f"{head} | {mode} | {r['mape']:.2f} | {r['within10']:.0f} | {r['tau']:.3f} "
                    f"| {r['max_ape']:.1f} |"
                )
    print(f"date: {datetime.date.today()}, device: {table.device}, clock: {a.clock}")
    print(
        "| model | configs | entries | build s | mode | MAPE % | within 10 % | Kendall tau "
        "| max APE % |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(json.dumps(vars(a)))


if __name__ == "__main__":
    main()
