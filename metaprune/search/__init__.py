"""Evolutionary search for the best pruned network under constraints (MetaPruning, sec. 3.3).

``run_search(space, scorer, costs, cfg, out_dir)`` is the core (any scorer, any cost functions);
``search(cfg, out_dir, pruningnet_path)`` scores with a trained PruningNet (the entry point);
``load_search(run_dir)`` opens a finished search for a notebook.  The algorithms are registered
strategies (``metaprune.search.strategies``), the engine :class:`Evolution` is shared by them.
"""

from metaprune.search.api import search
from metaprune.search.baseline import uniform_baseline
from metaprune.search.callbacks import Callback, GenerationReport
from metaprune.search.config import ScorerConfig, SearchConfig
from metaprune.search.constraints import (
    Bound,
    BoundSyntaxError,
    Constraints,
    InfeasibleConstraintError,
)
from metaprune.search.evolution import Evolution, default_costs, run_search
from metaprune.search.pareto import pareto_mask
from metaprune.search.results import SearchResult, SearchRun, load_search
from metaprune.search.scoring import DistributedScorer, ProxyScorer, Scorer
from metaprune.search.strategies import STRATEGIES, Strategy

__all__ = [
    "STRATEGIES",
    "Bound",
    "BoundSyntaxError",
    "Callback",
    "Constraints",
    "DistributedScorer",
    "Evolution",
    "GenerationReport",
    "InfeasibleConstraintError",
    "ProxyScorer",
    "Scorer",
    "ScorerConfig",
    "SearchConfig",
    "SearchResult",
    "SearchRun",
    "Strategy",
    "default_costs",
    "load_search",
    "pareto_mask",
    "run_search",
    "search",
    "uniform_baseline",
]
