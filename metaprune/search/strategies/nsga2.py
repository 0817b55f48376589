"""NSGA-II over accuracy and costs (Deb et al., 2002; beyond MetaPruning, which searches one
constrained objective, sec. 3.3).

Accuracy (maximised) and the ``objectives`` costs (minimised, each divided by its maximum) are
the objectives of DEAP's NSGA-II: parents are picked by binary tournament on (front rank,
crowding distance), children made by the shared mutation, crossover and random fill, and the
next population is ``tools.selNSGA2`` of the population and its children.  One stage under the
constraints; targets are answered from the table of everything scored, and the search's front is
the non-dominated front over the objectives.
"""

from __future__ import annotations

from typing import Any

from deap import tools
from deap.tools.emo import assignCrowdingDist

from metaprune.search.strategies.base import Genes, Stage
from metaprune.search.strategies.evolutionary import EvolutionaryStrategy


def rank_and_crowding(pop: list[Any]) -> list[int]:
    """Front rank of each individual (0 = non-dominated), crowding distances assigned in place."""
    rank = [0] * len(pop)
    index = {id(ind): i for i, ind in enumerate(pop)}
    for r, front in enumerate(tools.sortNondominated(pop, len(pop))):
        assignCrowdingDist(front)
        for ind in front:
            rank[index[id(ind)]] = r
    return rank


class NSGA2(EvolutionaryStrategy):
    """``search.algorithm=nsga2``: a Pareto front over accuracy and ``objectives``."""

    name = "nsga2"

    def fitness_costs(self) -> list[str]:
        return list(self.cfg.objectives)

    def front_costs(self) -> list[str]:
        return list(self.cfg.objectives)

    def offspring(self, stage: Stage) -> list[Genes]:
        eng = self.engine
        pop = self.individuals(eng.population)
        rank = rank_and_crowding(pop)

        def tournament() -> Genes:
            i, j = (int(v) for v in eng.rng.integers(len(pop), size=2))
            ki = (rank[i], -pop[i].fitness.crowding_dist)
            kj = (rank[j], -pop[j].fitness.crowding_dist)
            return list(pop[i] if ki <= kj else pop[j])

        return self.children(tournament, stage, len(pop))

    def survivors(self, kids: list[Genes]) -> list[Genes]:
        union = self.individuals(self.engine.population + kids)
        chosen = tools.selNSGA2(union, min(self.cfg.population, len(union)))
        return [list(ind) for ind in chosen]
