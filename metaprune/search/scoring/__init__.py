"""Scorers of candidates, one file each: the protocol, the PruningNet proxy, its racing (early
stopping) and stacking (several candidates per forward pass), and the distributed wrapper."""

from metaprune.search.scoring.distributed import DistributedScorer
from metaprune.search.scoring.protocol import Scorer
from metaprune.search.scoring.proxy import ProxyScorer

__all__ = ["DistributedScorer", "ProxyScorer", "Scorer"]
