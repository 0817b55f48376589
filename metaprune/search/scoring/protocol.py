"""The scorer protocol: what a search asks of whatever ranks its candidates.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) scores a candidate by the accuracy of the network
the PruningNet generates for it; the search only needs "a number per config, higher is better",
so any scorer (the proxy, an analytic one in tests, a benchmark look-up) plugs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from metaprune.space import ChannelConfig


@runtime_checkable
class Scorer(Protocol):
    """Scores configs (higher is better, e.g. proxy top-1 accuracy).

    Optional extras the search uses when present: ``last_details`` (one dict per config of the
    last call, added to the results table), ``state_dict()`` / ``load_state_dict(d)`` (JSON-able
    state saved with each checkpoint), ``set_rivalry(r)`` (told once whom candidates compete
    with, for racing: :class:`~metaprune.search.scoring.racing.Rivalry`), ``gene_features()``
    (an ``(n_genes, d)`` array or ``None``: per-gene state input of the RL controller).
    """

    def score(self, configs: Sequence[ChannelConfig]) -> list[float]: ...
