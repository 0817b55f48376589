"""Validating a latency predictor against end-to-end measurements.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3) trusts its look-up table without reporting
how well it predicts whole networks.  :func:`validate_latency` measures random configs end to end
and reports, for both predictor modes, the mean absolute percentage error, the share within
+-10 %, the worst error and Kendall's tau (:func:`latency_metrics`, :func:`kendall_tau`), beside
the repeatability of the measurement itself (pass 1 against pass 2: the noise ceiling no
predictor can beat).  ``refit`` fits the correction again in the same measurement window, since a
machine's speed drifts by several per cent over minutes.

This validation is beyond the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metaprune.cost.latency.predictor import MODES, LatencyModel, fit_overhead

SAMPLINGS = ("uniform", "spread")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall rank correlation (tau-b, ties accounted for) of two equally long sequences."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(
            f"kendall_tau needs two 1-d sequences of equal length >= 2, got {x.shape}, {y.shape}"
        )
    iu = np.triu_indices(x.size, k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def latency_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), share of configs within +-10% (%), and Kendall tau of predicted vs measured."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = np.abs(p - m) / m
    return {
        "mape": float(100 * rel.mean()),
        "within10": float(100 * (rel <= 0.10 + 1e-12).mean()),
        "max_ape": float(100 * rel.max()),
        "tau": kendall_tau(p, m),
    }


def validate_latency(
    model: LatencyModel,
    n: int = 50,
    seed: int = 0,
    rounds: int | None = None,
    passes: int = 2,
    refit: bool = False,
    sampling: str = "uniform",
) -> dict[str, Any]:
    """Measure ``n`` random configs end to end and compare with both prediction modes.

    ``sampling``: ``uniform`` draws every gene uniformly (:meth:`ChannelSpace.sample`: the
    configs cluster within about +-10 % of the mean latency, so the rank correlation there
    mostly measures the timing noise); ``spread`` draws them across the whole latency range
    (:meth:`ChannelSpace.sample_spread`), as a search over several targets visits them.

    The configs are measured in ``passes`` independent interleaved passes; their median is the
    reference, and with two or more passes the agreement of pass 1 with pass 2 (as if pass 1
    were a prediction) is reported as ``repeatability``: the noise ceiling of the measurement,
    which no predictor can beat.  ``refit``: fit the overhead again on the table's fit networks
    (other configs than the validated ones), measured in the same interleaved passes as the
    validated configs, so that both see the same load on a shared machine.
    """
    if n < 2 or passes < 1:
        raise ValueError(f"validation needs n >= 2 configs and passes >= 1, got {n}, {passes}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {list(SAMPLINGS)}")
    space, table = model.space, model.table
    fit_cfgs = [space.config(f["genes"]) for f in table.fit["nets"]] if refit else []
    rng = np.random.default_rng(seed)
    draw = space.sample if sampling == "uniform" else space.sample_spread
    configs = [draw(rng) for _ in range(n)]
    both = fit_cfgs + configs
    runs = np.stack([table.measure_networks(space, both, rounds=rounds) for _ in range(passes)])
    if refit:
        fit_overhead(table, space, fit_cfgs, np.median(runs[:, : len(fit_cfgs)], axis=0))
    runs = runs[:, len(fit_cfgs) :]
    measured = np.median(runs, axis=0)
    out: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "passes": passes,
        "refit": refit,
        "sampling": sampling,
        "measured_ms": measured.tolist(),
        "modes": {},
    }
    if passes >= 2:
        out["repeatability"] = latency_metrics(runs[0], runs[1])
    for mode in MODES:
        pred = model.predict_many(configs, mode=mode)
        out["modes"][mode] = {"predicted_ms": pred.tolist(), **latency_metrics(pred, measured)}
    out["fit"] = {k: v for k, v in table.fit.items() if k != "nets"}
    out["configs"] = [list(c.indices) for c in configs]
    return out
