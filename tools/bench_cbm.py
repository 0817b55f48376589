"""Benchmark: a Channel-Bench-Macro results file against its ``cbm_*`` family, and the file's
reference figures.

Channel-Bench-Macro (Su et al., BCNet, CVPR 2021) trained every network of its search spaces
alone; to judge a MetaPruning proxy (Liu et al., ICCV 2019, sec. 3.2-3.3) against it, the
family here must be exactly the benchmark's networks.  This tool

* counts the FLOPs and parameters of every entry with the family's exact cost model and reports
  how many equal the file's ``flops`` / ``params`` (and any that differ),
* computes from the file the Kendall taus a proxy is read beside: seed against seed (the noise
  ceiling) and FLOPs alone (the floor), over all entries and within +-10 % FLOPs bands at the
  quartiles of the file's FLOPs (the median band is the benchmark README's),
* lists the best entry under 25 / 50 / 75 % of the largest network's FLOPs, and the uniform ones.

Usage: ``python tools/bench_cbm.py --results PATH/Results_MobileNet.json
[--family cbm_mobilenet] [--sample 1000] [--draws 10] [--seed 0]``; prints Markdown.  Accuracies
are those of the benchmark's own training (original CIFAR-10).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from metaprune import create_space
from metaprune.benchmarks import (
    BENCHMARK_FAMILIES,
    BenchmarkResults,
    best_within,
    load_results,
    reference_taus,
)


def check_costs(results: BenchmarkResults, family: str) -> bool:
    """Print how many entries' flops/params the family reproduces; True when all do."""
    space = create_space(family)
    t0 = time.perf_counter()
    configs = results.configs(space)
    wrong = results.cost_mismatches(space)
    seconds = time.perf_counter() - t0
    size = len(space.ratios) ** len(space.genes)
    bad = {w["key"] for w in wrong}
    print(f"## {results.source} against `{family}`\n")
    print(f"- entries: {len(results)}; networks of the space: {size}; in both: {len(configs)}")
    print(
        f"- flops and params equal to the exact count: {len(configs) - len(bad)} of "
        f"{len(configs)} entries ({len(wrong)} mismatching values; {seconds:.2f} s)"
    )
    for w in wrong[:10]:
        print(f"  - `{w['key']}` {w['cost']}: file {w['file']:,}, counted {w['counted']:,}")
    return not wrong and len(configs) == len(results) == size


def print_taus(results: BenchmarkResults, sample: int, draws: int, seed: int) -> None:
    """Print the reference taus over all entries and in the bands at the FLOPs quartiles."""
    levels = [float(v) for v in np.quantile(results.flops, [0.25, 0.5, 0.75])]
    rows = reference_taus(results, levels, sample=sample, draws=draws, seed=seed)
    print("\n## Reference Kendall taus (mean +- sd over draws)\n")
    print("| subset | entries | drawn | seed 1 vs seed 2 | seed 1 vs mean of rest | FLOPs alone |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "sample" not in r:
            print(f"| {r['subset']} | {r['entries']} | - | - | - | - |")
            continue
        cells = [f"{r[k]:.3f} +- {r[k + '_sd']:.3f}" for k in ("seed1_vs_seed2", "seed1_vs_rest")]
        cells.append(f"{r['flops']:.3f} +- {r['flops_sd']:.3f}")
        drawn = f"{r['draws']} x {r['sample']}"
        print(f"| {r['subset']} | {r['entries']} | {drawn} | " + " | ".join(cells) + " |")
    print(
        "\nBands: entries within +-10 % of the 25th, 50th and 75th percentile of the file's FLOPs."
    )


def print_best(results: BenchmarkResults) -> None:
    """Print the best entry under 25 / 50 / 75 % of the max FLOPs and the uniform entries."""
    top = float(results.flops.max())
    print("\n## Best entries under a FLOPs budget, and the uniform ones\n")
    print("| config | budget | FLOPs (M) | mean acc. (%) |")
    print("|---|---|---|---|")
    picks = [(best_within(results, f * top), f"<= {f:.0%} of max") for f in (0.25, 0.5, 0.75)]
    picks += [(str(d) * len(results.keys[0]), "uniform") for d in range(1, 5)]
    for key, label in picks:
        if key is None or key not in results.row:
            print(f"| - | {label} | - | - |")
            continue
        i = results.row[key]
        print(f"| `{key}` | {label} | {results.flops[i] / 1e6:.1f} | {results.mean[i]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="the benchmark's results JSON file")
    ap.add_argument("--family", default="cbm_mobilenet", choices=BENCHMARK_FAMILIES)
    ap.add_argument("--sample", type=int, default=1000, help="entries per tau draw")
    ap.add_argument("--draws", type=int, default=10, help="random draws per tau")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws")
    args = ap.parse_args()
    results = load_results(args.results)
    ok = check_costs(results, args.family)
    print_taus(results, args.sample, args.draws, args.seed)
    print_best(results)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
