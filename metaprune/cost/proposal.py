"""Random configs aimed at a cost interval: a shared width level plus per-gene jitter.

MetaPruning (Liu et al., ICCV 2019) draws every gene's width uniformly, for training (sec. 3.2)
and for the random candidates of its search (sec. 3.3).  A uniform draw's cost is a sum of many
independent genes, so it concentrates around the middle of the range: on the full ResNet-50
space (31 choices, 224 px) uniform draws land at 0.31 +- 0.06 of the maximum FLOPs, and only
about 0.2 % of them inside the paper's own 1.95-2.05 GFLOPs band.  This proposal departs from the
paper to reach any part of the range: each candidate gets a *level* (a fractional choice index
shared by all genes, possibly beyond the ends) plus independent per-gene jitter (normal, a sixth
of the choices), rounded and clipped to the choices; the level is the one at which such
candidates cost, on average, a target drawn uniformly from the interval.  On that band about a
quarter of the candidates land inside it.

:func:`propose` keeps the candidates whose cost lies in the interval; with ``nearest=True`` it
fills up with the candidates nearest to the interval, so ``interval=(t, t)`` with ``n=1`` picks
the candidate of one batch nearest to a target ``t`` (a FLOPs-uniform training sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from metaprune.space import ChannelConfig, ChannelSpace

CostFn = Callable[[Sequence[ChannelConfig]], np.ndarray]
"""Cost of each of a list of configs, as an array (FLOPs, params, latency ...)."""
JITTER = 1.0 / 6.0
"""Standard deviation of the per-gene jitter, as a share of the number of choices."""
CURVE_SAMPLES = 4
"""Jittered candidates per level when mapping a target cost to a level."""


def propose(
    space: ChannelSpace,
    cost: CostFn,
    interval: tuple[float | None, float | None],
    rng: np.random.Generator,
    n: int,
    *,
    batch: int = 64,
    max_draws: int | None = None,
    nearest: bool = False,
) -> list[ChannelConfig]:
    """Up to ``n`` configs of ``space`` whose ``cost`` lies in ``interval`` (``(lower,
    upper)``, either side ``None`` for open), in draw order.

    Candidates are drawn ``batch`` at a time (module docstring), at most ``max_draws`` (default
    ``n * batch``) in all.  ``nearest=True`` returns ``min(n, drawn)`` configs: those inside the
    interval, then the others nearest to it.  Deterministic given ``rng``.
    """
    space.require_widths_only("cost-targeted proposals")
    if n < 0 or batch < 1:
        raise ValueError(f"propose needs n >= 0 and batch >= 1, got n={n}, batch={batch}")
    lo, hi = interval
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"proposal interval [{lo}, {hi}] is empty")
    n_choices, n_genes = len(space.ratios), len(space.genes)
    sd = JITTER * n_choices
    levels, curve = _level_curve(space, cost, sd)
    t_lo = curve[0] if lo is None else min(max(lo, curve[0]), curve[-1])
    t_hi = curve[-1] if hi is None else min(max(hi, curve[0]), curve[-1])
    budget = n * batch if max_draws is None else max_draws
    kept: list[ChannelConfig] = []
    rest: list[tuple[float, int, ChannelConfig]] = []  # (distance to the interval, order, config)
    while len(kept) < n and budget > 0:
        k = min(batch, budget)
        budget -= k
        level = np.interp(rng.uniform(t_lo, t_hi, (k, 1)), curve, levels)
        configs = _jittered(space, level, rng.normal(0.0, sd, (k, n_genes)))
        values = np.asarray(cost(configs), dtype=np.float64)
        below = 0.0 if lo is None else np.maximum(lo - values, 0.0)
        above = 0.0 if hi is None else np.maximum(values - hi, 0.0)
        dist = np.broadcast_to(below + above, values.shape)
        for c, d in zip(configs, dist, strict=True):
            if d == 0.0 and len(kept) < n:
                kept.append(c)
            elif nearest:
                rest.append((float(d), len(rest), c))
    if nearest and len(kept) < n:
        kept += [c for _, _, c in sorted(rest, key=lambda r: r[:2])[: n - len(kept)]]
    return kept


def _jittered(space: ChannelSpace, level: np.ndarray, jitter: np.ndarray) -> list[ChannelConfig]:
    """Configs at ``level`` (k, 1) plus ``jitter`` (k, genes), rounded and clipped."""
    idx = np.clip(np.rint(level + jitter), 0, len(space.ratios) - 1).astype(np.int64)
    return [space.config(row) for row in idx]


def _level_curve(space: ChannelSpace, cost: CostFn, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean cost of the jittered candidates at each level of a grid that reaches ``2 sd``
    beyond both ends of the choices (clipping pulls the cost of a candidate at an end level
    towards the middle, and only a level beyond the end centres the candidates on the extreme
    costs), made non-decreasing.  A fixed internal seed (the caller's generator is untouched) and
    ``CURVE_SAMPLES`` candidates per level: a function of the space and the cost alone."""
    n_choices, n_genes = len(space.ratios), len(space.genes)
    levels = np.linspace(-2 * sd, n_choices - 1 + 2 * sd, 2 * n_choices)
    grid = np.repeat(levels, CURVE_SAMPLES)[:, None]
    noise = np.random.default_rng(0).normal(0.0, sd, (len(grid), n_genes))
    values = np.asarray(cost(_jittered(space, grid, noise)), dtype=np.float64)
    curve = np.maximum.accumulate(values.reshape(len(levels), CURVE_SAMPLES).mean(axis=1))
    return levels, curve
