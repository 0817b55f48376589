"""The paper's constrained evolutionary search (MetaPruning, Liu et al., ICCV 2019, sec. 3.3).

Generation 0 is drawn at random; the parents of every later generation are the top ``parents``
candidates this stage has visited (by proxy accuracy), and its children are mutation and
crossover children of parents picked uniformly, plus the random fill
(:class:`~metaprune.search.strategies.evolutionary.EvolutionaryStrategy`).  A candidate that
violates a constraint, or that the stage has already visited, is rejected and redrawn (as in the
paper's reference implementation, so 50 x 20 generations visit 1,000 distinct networks).

Beyond the paper: with ``targets`` the GA runs once per target (a bound on the primary cost
added to the constraints), every stage sharing the engine's score cache; a racing scorer's
candidates race against the leaders of each stage they meet.
"""

from __future__ import annotations

from deap import tools

from metaprune.search.scoring.racing import Rivalry
from metaprune.search.strategies.base import Genes, Stage
from metaprune.search.strategies.evolutionary import EvolutionaryStrategy


class GeneticAlgorithm(EvolutionaryStrategy):
    """``search.algorithm=ga``: top-k parents, one stage per target."""

    name = "ga"

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

    def offspring(self, stage: Stage) -> list[Genes]:
        eng = self.engine
        seen = [r for r in eng.rows if tuple(r["widths"]) in eng.visited]
        inds = self.individuals([r["genes"] for r in seen])
        parents = tools.selBest(inds, min(self.cfg.parents, len(inds)))
        pick = lambda: list(parents[int(eng.rng.integers(len(parents)))])  # noqa: E731
        return self.children(pick, stage, len(parents))
