"""Search strategies, one file each, and their registry (``search.algorithm`` picks one).

``ga`` (the paper's GA, optionally screened by a surrogate: ``search.surrogate``), ``nsga2``,
``random`` and ``rl`` (an LSTM controller).  A new algorithm is a
:class:`~metaprune.search.strategies.base.Strategy` subclass in its own file here plus one entry
in :data:`STRATEGIES`.
"""

from metaprune.search.strategies.base import Stage, Strategy
from metaprune.search.strategies.ga import GeneticAlgorithm
from metaprune.search.strategies.nsga2 import NSGA2
from metaprune.search.strategies.random import RandomSearch
from metaprune.search.strategies.rl import ReinforceController
from metaprune.search.strategies.surrogate import SURROGATES

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (GeneticAlgorithm, NSGA2, RandomSearch, ReinforceController)
}
"""Every registered strategy by its ``search.algorithm`` name."""


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy called ``name``; an unknown name is a ``ValueError`` listing the
    registered ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"search.algorithm={name!r} is not a registered strategy; choose one of "
            f"{sorted(STRATEGIES)}"
        ) from None


__all__ = [
    "NSGA2",
    "STRATEGIES",
    "SURROGATES",
    "GeneticAlgorithm",
    "RandomSearch",
    "ReinforceController",
    "Stage",
    "Strategy",
    "strategy_class",
]
