"""The interface of a search strategy: what the search engine asks of an algorithm.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) searches with one algorithm, an evolutionary one;
here the algorithm is a strategy behind this small interface so that others (NSGA-II beside the
paper's GA now; random search, an RL controller, surrogate-assisted evolution next) are one file
each.  The engine (:class:`~metaprune.search.evolution.Evolution`) owns everything the
algorithms share: stages, the score cache, constraint rejection, checkpoints and resume,
results and logging.  A strategy decides

* the *stages* of a search (the GA runs once per target; others once under the constraints and
  answer every target from the shared table),
* whom a racing scorer's candidates race against (:meth:`Strategy.rivalry`),
* the costs its front is drawn over (:meth:`Strategy.front_costs`),
* each generation's new candidates (:meth:`Strategy.propose`, asking the engine's ``draw`` /
  ``draw_random`` so every candidate meets the stage's bounds and is new to it) and the
  population carried to the next generation (:meth:`Strategy.survivors`).

A strategy keeps its randomness in the engine's ``rng`` (so a search is deterministic given its
seed) and any state of its own in :meth:`Strategy.state_dict` (saved with every checkpoint).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from metaprune.search.constraints import Bound
from metaprune.search.scoring.racing import Rivalry

if TYPE_CHECKING:
    from metaprune.search.evolution import Evolution

Genes = list[int]
"""One candidate as the engine hands it around: a choice index per gene."""


@dataclass
class Stage:
    """One run of generations inside a search: its name, its target spec and all its bounds."""

    name: str
    target: Any
    bounds: list[Bound]


class Strategy(ABC):
    """A search algorithm driven by the engine, one generation at a time (module docstring)."""

    name: ClassVar[str]
    """The ``search.algorithm`` value that selects it."""

    def __init__(self, engine: Evolution) -> None:
        self.engine = engine
        self.cfg = engine.cfg

    def stages(self) -> list[Stage]:
        """One stage under the search's constraints; targets are answered from the table."""
        return [Stage("search", None, list(self.engine.base_bounds))]

    def front_costs(self) -> list[str]:
        """The costs minimised beside the maximised accuracy on the search's front."""
        return [self.cfg.cost]

    def rivalry(self, stages: list[Stage]) -> Rivalry:
        """Whom a racing scorer's candidates race against: by default the candidates that cost
        no more in every front cost (keeps the front exact)."""
        return Rivalry(self.engine.constraints.costs, (), self.front_costs())

    @abstractmethod
    def propose(self, stage: Stage) -> list[Genes]:
        """This generation's new candidates (each meeting ``stage.bounds``, none seen before in
        the stage); an empty list in generation 0 means the stage cannot be filled."""

    def survivors(self, kids: list[Genes]) -> list[Genes]:
        """The population carried to the next generation once ``kids`` are scored."""
        return kids

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state of the strategy's own (beyond the engine's population and RNG)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a strategy without state of its own accepts none)."""
        if state:
            raise ValueError(f"strategy {self.name!r} keeps no state, got keys {sorted(state)}")
