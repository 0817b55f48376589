"""Reference figures a proxy and a search are judged beside, computed from a results file.

MetaPruning (Liu et al., ICCV 2019) reports no rank correlation of its proxy; here the proxy's
Kendall tau against a Channel-Bench-Macro file's mean accuracy is read beside two figures of
the file itself: the noise ceiling (seed against seed: no proxy can rank the networks better
than one training run predicts another) and the floor (ranking by FLOPs alone), overall and
within FLOPs bands (entries within +-10 % of a FLOPs level), where a FLOPs-bounded search works.  :func:`rank_correlations` reads a proxy's scores beside
those figures on the same entries (Kendall tau and Spearman rho).
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


def flops_subsets(
    flops: np.ndarray, levels: Sequence[float], width: float = 0.1
) -> list[tuple[str, float | None, np.ndarray]]:
    """``(name, level, mask)``: every entry (``all``), then the band of each FLOPs level."""
    subsets: list[tuple[str, float | None, np.ndarray]] = [
        ("all", None, np.ones(len(flops), dtype=bool))
    ]
    subsets += [(f"band {lv / 1e6:.1f}M", lv, band_mask(flops, lv, width)) for lv in levels]
    return subsets


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (ties get their mean rank)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(
            f"spearman_rho needs two 1-d sequences of equal length >= 2, got {x.shape}, {y.shape}"
        )
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def rank_correlations(
    results: BenchmarkResults,
    keys: Sequence[str],
    scores: Sequence[float],
    levels: Sequence[float],
    width: float = 0.1,
) -> list[dict[str, Any]]:
    """How well ``scores`` of the entries ``keys`` rank them by the file's mean accuracy, beside
    the file's own figures on the SAME entries, overall and within each FLOPs band.

    Each row has ``subset``, ``level``, ``entries`` and, with at least 3 entries, the Kendall tau
    (``*_tau``) and Spearman rho (``*_rho``; ``None`` where one side is constant) of ``score``
    (the scores against the mean),
    ``seed_vs_seed`` (the first seed's accuracies against the second's: the noise ceiling) and
    ``flops`` (FLOPs against the mean: the floor).
    """
    if len(keys) != len(scores):
        raise ValueError(f"{len(keys)} keys but {len(scores)} scores")
    if results.seeds < 2:
        raise ValueError(f"seed-vs-seed figures need >= 2 seeds; {results.source} has one")
    missing = [k for k in keys if k not in results.row]
    if missing:
        raise KeyError(f"{len(missing)} key(s) not in {results.source}, first {missing[0]}")
    idx = np.array([results.row[k] for k in keys], dtype=np.int64)
    s, mean, acc = np.asarray(scores, dtype=np.float64), results.mean[idx], results.acc[idx]
    flops = results.flops[idx].astype(np.float64)
    pairs = {"score": (s, mean), "seed_vs_seed": (acc[:, 0], acc[:, 1]), "flops": (flops, mean)}
    out = []
    for name, level, mask in flops_subsets(flops, levels, width):
        row: dict[str, Any] = {"subset": name, "level": level, "entries": int(mask.sum())}
        if mask.sum() >= 3:
            for what, (x, y) in pairs.items():
                row[f"{what}_tau"] = _defined(kendall_tau(x[mask], y[mask]))
                row[f"{what}_rho"] = _defined(spearman_rho(x[mask], y[mask]))
        out.append(row)
    return out


def _defined(v: float) -> float | None:
    return None if np.isnan(v) else v


def percentile(values: np.ndarray, value: float) -> float:
    """Share (%) of ``values`` strictly above ``value`` (0: nothing is better)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("percentile of an empty set")
    return float(100.0 * np.count_nonzero(values > value) / values.size)


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
    out = []
    for name, level, mask in flops_subsets(results.flops, levels, width):
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
