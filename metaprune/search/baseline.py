"""The uniform-width baseline of a budget: a network with every gene at one ratio.

MetaPruning (Liu et al., ICCV 2019, sec. 4, Tables 1-2) compares each searched network with the
uniformly pruned one of the same FLOPs.  :func:`uniform_baseline` is that choice, made in one
place for the pipeline, the notebook and anyone comparing a winner with its baseline, among the
uniform configs (every gene at one choice; by default every choice of the space, or the nearest
choices to given ratios), by one of two rules:

* within the budget (default): the widest uniform config that meets every bound;
* matched cost (``match=winner``): the narrowest uniform config whose every cost the budget
  bounds is at or above the winner's, so the baseline never has less compute than the network
  it is compared with (what ``metaprune pipeline`` retrains).

Departure from the paper: the budget may bound any cost the caller can compute (FLOPs, params,
latency) and from both sides; the paper matches FLOPs by hand, and the uniform widths of a
discrete space rarely meet a winner's FLOPs exactly, so the matched rule errs on the baseline's
side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from metaprune.search.constraints import Bound, CostFn
from metaprune.search.evolution import default_costs
from metaprune.search.results import bounds_from_json
from metaprune.space import ChannelConfig, ChannelSpace


def uniform_baseline(
    space: ChannelSpace,
    bounds: Iterable[Bound | Mapping[str, Any]],
    costs: Mapping[str, CostFn] | None = None,
    ratios: Sequence[float] | None = None,
    match: ChannelConfig | None = None,
) -> ChannelConfig | None:
    """The uniform-width baseline of a budget, or ``None``.

    Without ``match``: the widest uniform config of ``space`` meeting every bound.  With
    ``match`` (a winner's config): the narrowest uniform config whose cost is at or above
    ``match``'s on every cost the bounds name (the bounds' limits are not applied: the matched
    baseline may exceed the budget the winner was searched for).

    ``bounds``: :class:`~metaprune.search.constraints.Bound` objects or their JSON (a winner's
    ``bounds`` in ``winners.json`` / ``SearchRun.winners``).  ``costs``: the cost functions the
    bounds name (default: exact ``flops`` and ``params``); a bound on a cost not among them, or
    no uniform config that qualifies, gives ``None``.  ``ratios``: the candidate widths, each
    taken as the nearest choice of the space (default: every choice), e.g. the ratios of a
    search's scored baselines.
    """
    space.require_widths_only("uniform baselines")
    bounds = [b if isinstance(b, Bound) else bounds_from_json([b])[0] for b in bounds]
    costs = default_costs(space) if costs is None else costs
    if any(b.cost not in costs for b in bounds):
        return None
    picks = (
        range(len(space.ratios)) if ratios is None else (space.ratio_index(r, True) for r in ratios)
    )
    configs = [space.config([i] * len(space.genes)) for i in sorted(set(picks))]
    ok = np.ones(len(configs), dtype=bool)
    for b in bounds:
        values = np.asarray(costs[b.cost](configs), dtype=np.float64)
        if match is None:
            ok &= b.mask(values)
        else:
            ok &= values >= float(np.asarray(costs[b.cost]([match]), dtype=np.float64)[0])
    fits = [c for c, o in zip(configs, ok, strict=True) if o]
    if not fits:
        return None
    return fits[-1] if match is None else fits[0]
