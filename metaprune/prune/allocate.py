"""Which channels each gene keeps: at given widths, or allocated globally to meet a cost target.

Given a criterion's scores (:mod:`.criterion`), a gene keeps its highest-scoring channels.  At
given widths (a uniform ratio or a :class:`~metaprune.space.ChannelConfig`, e.g. a search's
winner) that is all (:func:`keep_top`).  Globally (:func:`allocate`), channels are ranked across
genes and removed, least important first, until the network meets the target; the criterion says
how the ranking compares genes (``Criterion.normalise``): by the largest score removed (a global
threshold, network slimming, Liu et al., ICCV 2017, sec. 3.3) or by the summed importance removed
per unit of cost saved (group Fisher pruning, Liu et al., ICML 2021, sec. 3.3, normalises by
memory; a rate-distortion view, by rate).

Rounding to the space's width choices: the papers remove one channel at a time; here every
removal step takes a gene from its width choice to the next smaller one (its lowest-scoring
channels in between go together; of equally important steps, the one saving most of the target's
cost), and the greedy loop stops at the first configuration whose cost is at or under the
target, so the result is always one of the space's configurations and never over budget.  Cost
``memory`` is the output feature-map elements of every conv at batch 1 (the paper's memory of
activations; the input image excluded); ``latency`` is the project's table-based predictor.

On a space with depth genes the greedy loop steps width genes only, from a ``start`` config
whose depth genes it keeps (the blocks the criterion removed, :meth:`Criterion.dead_blocks`):
a removed block's cost is gone from the first configuration on, which leaves the other genes
that much more of the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from metaprune.cost import cost_model
from metaprune.prune.channels import Keep, Scores
from metaprune.space import ChannelConfig, ChannelSpace

COSTS = ("flops", "params", "memory", "latency")


def cost_function(
    space: ChannelSpace, name: str, latency_table: str | None = None
) -> Callable[[ChannelConfig], float]:
    """The cost ``name`` (one of :data:`COSTS`) of a config of ``space``; ``latency`` (ms, the
    project's table-based predictor) needs ``latency_table``."""
    if name == "flops":
        return cost_model(space).flops
    if name == "params":
        return cost_model(space).params
    if name == "memory":
        convs = [ly for ly in space.arch.layers if ly.kind == "conv"]

        def memory(config: ChannelConfig) -> float:
            c = config.channels()  # the layers of removed blocks are not in it
            return float(
                sum(c[ly.name][1] * ly.out_hw[0] * ly.out_hw[1] for ly in convs if ly.name in c)
            )

        return memory
    if name == "latency":
        if not latency_table:
            raise ValueError("a latency cost needs a latency table (metaprune latency build)")
        from metaprune.cost.latency.predictor import load_latency_model

        return load_latency_model(latency_table, space).predict
    raise ValueError(f"unknown cost {name!r}; choose one of {list(COSTS)}")


def check_scores(space: ChannelSpace, scores: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``scores`` has one finite score per channel of every width
    gene."""
    for g in space.width_space.genes:
        s = scores.get(g.name)
        if s is None or tuple(s.shape) != (g.max_channels,) or not torch.isfinite(s).all():
            shape = None if s is None else tuple(s.shape)
            raise ValueError(
                f"scores of gene {g.name!r} must be {g.max_channels} finite values, got {shape}"
            )


def keep_top(scores: Scores, widths: Mapping[str, int]) -> Keep:
    """Gene -> indices (ascending) of its ``widths[gene]`` highest-scoring channels; ties go to
    the lower index."""
    out = {}
    for gene, w in widths.items():
        s = scores[gene].double()
        order = sorted(range(len(s)), key=lambda i: (-float(s[i]), i))
        out[gene] = torch.tensor(sorted(order[:w]), dtype=torch.long)
    return out


def keep_for(space: ChannelSpace, scores: Scores, config: ChannelConfig) -> Keep:
    """The channels each width gene keeps at the widths of ``config`` (on a space with depth
    genes: of :meth:`~metaprune.space.ChannelSpace.width_config`, the network with every
    block; :func:`~metaprune.prune.channels.drop_removed` takes the removed ones out)."""
    check_scores(space, scores)
    return keep_top(scores, space.width_space.widths(space.width_config(config)))


def _smaller(choices: tuple[int, ...], i: int) -> int | None:
    """The largest choice index whose width is below choice ``i``'s (None at the minimum)."""
    below = [j for j in range(i) if choices[j] < choices[i]]
    return below[-1] if below else None


def allocate(
    space: ChannelSpace,
    scores: Scores,
    budget: float,
    cost: str | Callable[[ChannelConfig], float] = "flops",
    normalise: str | None = None,
    start: ChannelConfig | None = None,
) -> ChannelConfig:
    """The configuration the greedy global ranking reaches at ``cost`` (a name of
    :func:`cost_function` or a function of a config) <= ``budget`` (module docstring), from
    ``start`` (default: the full network), whose depth genes it keeps; ``normalise`` is the
    criterion's (None: by threshold).  A budget below the smallest configuration's cost
    raises ``ValueError`` naming it."""
    check_scores(space, scores)
    price = cost_function(space, cost) if isinstance(cost, str) else cost
    start = space.max() if start is None else start
    space.check(start)
    width = range(len(space.width_space.genes))  # the genes it steps: the depth genes follow
    floor = space.config([0 if k in width else i for k, i in enumerate(start.indices)])
    if price(floor) > budget:
        raise ValueError(
            f"prune.target: {cost} {budget:.6g} is below the smallest configuration's "
            f"{price(floor):.6g}"
        )
    norm = cost_function(space, normalise) if normalise else None
    ranked = {g: s.double().sort(descending=True).values for g, s in scores.items()}
    idx = list(start.indices)
    config = start
    while price(config) > budget:
        best: tuple[float, float, int, int] | None = None
        for k in width:
            gene = space.genes[k]
            j = _smaller(gene.choices, idx[k])
            if j is None:
                continue
            removed = ranked[gene.name][gene.choices[j] : gene.choices[idx[k]]]
            step = space.config([*idx[:k], j, *idx[k + 1 :]])
            saved = price(config) - price(step)
            if norm is None:
                value = float(removed.max())
            else:
                value = float(removed.sum()) / max(norm(config) - norm(step), 1e-12)
            if best is None or (value, -saved) < best[:2]:
                best = (value, -saved, k, j)
        assert best is not None  # the minimal config meets the budget
        idx[best[2]] = best[3]
        config = space.config(idx)
    return config
