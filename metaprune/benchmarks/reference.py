"""Reference figures a proxy and a search are judged beside, computed from a results file.

MetaPruning (Liu et al., ICCV 2019) reports no rank correlation of its proxy; here the proxy's
Kendall tau against a Channel-Bench-Macro file's mean accuracy is read beside two figures of
the file itself: the noise ceiling (seed against seed: no proxy can rank the networks better
than one training run predicts another) and the floor (ranking by FLOPs alone), overall and
within FLOPs bands (entries within +-10 % of a FLOPs level), where a FLOPs-bounded search works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metaprune.benchmarks.results import BenchmarkResults
from metaprune.cost.latency import kendall_tau


def band_mask(flops: np.ndarray, level: float, width: float = 0.1) -> np.ndarray:
    """Entries within ``+-width`` (a fraction) of the FLOPs ``level``."""
    if not level > 0 or not 0 < width < 1:
        raise ValueError(f"band needs level > 0 and 0 < width < 1, got {level}, {width}")
    flops = np.asarray(flops, dtype=np.float64)
    return np.abs(flops - level) <= width * level


def reference_taus(
    results: BenchmarkResults,
    levels: Sequence[float],
    sample: int = 1000,
    draws: int = 10,
    seed: int = 0,
    width: float = 0.1,
) -> list[dict[str, Any]]:
    """Kendall taus of the file, over all entries and within the band of each FLOPs level.

    ``seed1_vs_seed2``: the first seed's accuracies against the second's; ``seed1_vs_rest``:
    the first against the mean of the others; ``flops``: FLOPs against the mean accuracy.  Each
    is the mean over ``draws`` random draws of ``sample`` entries (the whole subset, once, when
    it is no larger), with its standard deviation (``*_sd``).
    """
    if results.seeds < 2:
        raise ValueError(f"seed-vs-seed tau needs >= 2 seeds; {results.source} has one")
    rng = np.random.default_rng(seed)
    subsets = [("all", None, np.ones(len(results), dtype=bool))]
    subsets += [(f"band {lv / 1e6:.1f}M", lv, band_mask(results.flops, lv, width)) for lv in levels]
    out = []
    for name, level, mask in subsets:
        idx = np.flatnonzero(mask)
        row: dict[str, Any] = {"subset": name, "level": level, "entries": int(idx.size)}
        if idx.size < 2:
            out.append(row)
            continue
        n, k = min(sample, idx.size), 1 if idx.size <= sample else draws
        taus: dict[str, list[float]] = {"seed1_vs_seed2": [], "seed1_vs_rest": [], "flops": []}
        for _ in range(k):
            s = rng.choice(idx, n, replace=False)
            acc = results.acc[s]
            taus["seed1_vs_seed2"].append(kendall_tau(acc[:, 0], acc[:, 1]))
            taus["seed1_vs_rest"].append(kendall_tau(acc[:, 0], acc[:, 1:].mean(axis=1)))
            taus["flops"].append(kendall_tau(results.flops[s], results.mean[s]))
        row.update(sample=n, draws=k)
        for name_, v in taus.items():
            row[name_], row[f"{name_}_sd"] = float(np.mean(v)), float(np.std(v))
        out.append(row)
    return out


def best_within(results: BenchmarkResults, max_flops: float) -> str | None:
    """Key of the entry of highest mean accuracy with at most ``max_flops`` (None if none)."""
    ok = np.flatnonzero(results.flops <= max_flops)
    return results.keys[ok[np.argmax(results.mean[ok])]] if ok.size else None
