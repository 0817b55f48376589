"""Scorers of candidates: the protocol, the PruningNet proxy (with racing and stacking) and the
distributed wrapper, one file each."""

from metaprune.search.scoring.distributed import DistributedScorer
from metaprune.search.scoring.protocol import Scorer
from metaprune.search.scoring.proxy import ProxyScorer

__all__ = ["DistributedScorer", "ProxyScorer", "Scorer"]
