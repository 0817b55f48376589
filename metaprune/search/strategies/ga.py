"""The paper's constrained evolutionary search (MetaPruning, Liu et al., ICCV 2019, sec. 3.3).

Generation 0 is drawn at random; the parents of every later generation are the top ``parents``
candidates this stage has visited (by proxy accuracy), and its children are mutation and
crossover children of parents picked uniformly, plus the random fill
(:class:`~metaprune.search.strategies.evolutionary.EvolutionaryStrategy`).  A candidate that
violates a constraint, or that the stage has already visited, is rejected and redrawn (as in the
paper's reference implementation, so 50 x 20 generations visit 1,000 distinct networks).

Beyond the paper: with ``targets`` the GA runs once per target (a bound on the primary cost
added to the constraints), every stage sharing the engine's score cache; a racing scorer's
candidates race against the leaders of each stage they meet (:class:`TargetStages`, which the
random search and the RL controller share).  With ``surrogate`` a regressor screens a pool of
children and only the most promising are scored (:mod:`.surrogate`); without it (the default)
this is the GA above, unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deap import tools

from metaprune.search.scoring.racing import Rivalry
from metaprune.search.strategies.base import Genes, Stage, Strategy
from metaprune.search.strategies.evolutionary import EvolutionaryStrategy
from metaprune.search.strategies.surrogate import Screen

if TYPE_CHECKING:
    from metaprune.search.evolution import Evolution


class TargetStages(Strategy):
    """One stage per target (its bound on the primary cost added to the constraints), or one
    under the constraints without targets; candidates race against each stage's leaders."""

    def stages(self) -> list[Stage]:
        eng = self.engine
        if not eng.targets:
            return super().stages()
        return [
            Stage(f"target_{i}", t, [*eng.base_bounds, b])
            for i, (t, b) in enumerate(zip(self.cfg.targets, eng.targets, strict=True))
        ]

    def rivalry(self, stages: list[Stage]) -> Rivalry:
        """The leaders of each stage (its bounds are a group), else cheaper candidates."""
        groups = [st.bounds for st in stages]
        return Rivalry(self.engine.constraints.costs, groups, self.front_costs())


class GeneticAlgorithm(TargetStages, EvolutionaryStrategy):
    """``search.algorithm=ga``: top-k parents, one stage per target, optionally screened by a
    surrogate."""

    name = "ga"

    def __init__(self, engine: Evolution) -> None:
        super().__init__(engine)
        self.screen = Screen(engine) if self.cfg.surrogate else None

    def offspring(self, stage: Stage) -> list[Genes]:
        eng = self.engine
        seen = [r for r in eng.rows if tuple(r["widths"]) in eng.visited]
        inds = self.individuals([r["genes"] for r in seen])
        parents = tools.selBest(inds, min(self.cfg.parents, len(inds)))
        pick = lambda: list(parents[int(eng.rng.integers(len(parents)))])  # noqa: E731
        make = lambda: self.children(pick, stage, len(parents))  # noqa: E731
        return make() if self.screen is None else self.screen.select(make)

    def survivors(self, kids: list[Genes]) -> list[Genes]:
        if self.screen is not None:
            self.screen.report(kids)
        return kids
