"""Scoring candidates on several ``torchrun`` ranks (beyond the paper, which scores on one).

:class:`DistributedScorer` gives each rank a share of every batch of candidates and all-gathers
the scores (and the per-image correctness of the fully evaluated ones); every rank feeds all
results to its racing history, so the ranks stay in step (racing decisions, and so scores of
stopped candidates, depend on how candidates are split between ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from metaprune.search.scoring.racing import Rivalry
from metaprune.space import ChannelConfig

Gather = Callable[[Any], list[Any]]


def all_gather_objects(obj: Any) -> list[Any]:
    """``torch.distributed.all_gather_object``: ``obj`` of every rank, in rank order."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, rank: int, world_size: int) -> list[int]:
    """Indices of the items of a batch of ``n`` that ``rank`` scores (round robin)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return list(range(rank, n, world_size))


class DistributedScorer:
    """Splits each batch of candidates among ranks, scores this rank's share with ``inner``
    and all-gathers the scores, details and per-image correctness (full and at the first
    test; ``gather`` defaults to ``torch.distributed``)."""

    def __init__(
        self, inner: Any, rank: int, world_size: int, gather: Gather | None = None
    ) -> None:
        shard(0, rank, world_size)
        self.inner, self.rank, self.world_size = inner, rank, world_size
        self.gather = gather or all_gather_objects
        self.last_details: list[dict[str, Any]] = []

    def score(self, configs: Sequence[ChannelConfig]) -> list[float]:
        mine = [configs[i] for i in shard(len(configs), self.rank, self.world_size)]
        scores = list(self.inner.score(mine)) if mine else []
        details = list(getattr(self.inner, "last_details", None) or [{}] * len(scores))
        correct = list(getattr(self.inner, "last_correct", None) or [None] * len(scores))
        partial = list(getattr(self.inner, "last_partial", None) or [None] * len(scores))
        parts = self.gather((scores, details, correct, partial))
        out: list[float] = [0.0] * len(configs)
        all_details: list[dict[str, Any]] = [{}] * len(configs)
        observe = getattr(self.inner, "observe", None)
        for r, (s, d, c, p) in enumerate(parts):
            idx = shard(len(configs), r, self.world_size)
            if len(s) != len(idx):
                raise RuntimeError(f"rank {r} returned {len(s)} scores for {len(idx)} candidates")
            for i, v, dd in zip(idx, s, d, strict=True):
                out[i], all_details[i] = float(v), dd
            if r != self.rank and callable(observe) and idx:
                observe([configs[i] for i in idx], s, c, p)
        self.last_details = all_details
        return out

    def gene_features(self) -> Any:
        get = getattr(self.inner, "gene_features", None)
        return get() if callable(get) else None

    def set_rivalry(self, rivalry: Rivalry) -> None:
        set_rivalry = getattr(self.inner, "set_rivalry", None)
        if callable(set_rivalry):
            set_rivalry(rivalry)

    def state_dict(self) -> dict[str, Any] | None:
        get = getattr(self.inner, "state_dict", None)
        return get() if callable(get) else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load = getattr(self.inner, "load_state_dict", None)
        if callable(load):
            load(state)
