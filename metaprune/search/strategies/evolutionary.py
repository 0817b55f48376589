"""What the evolutionary strategies share (MetaPruning, Liu et al., ICCV 2019, sec. 3.3).

Generation 0 is drawn at random; a later generation has ``mutation_children`` children of a
parent mutated gene by gene (probability ``mutation_prob``), ``crossover_children`` children of
two parents by uniform crossover, and random candidates filling the population.  How parents
are picked is the strategy's (:mod:`.ga`: the top-k; :mod:`.nsga2`: binary tournaments).

DEAP's operators use the global ``random`` module, so the variation operators here are the
space's own (driven by the engine's seeded ``numpy`` generator) wrapped in a DEAP toolbox;
DEAP supplies the individuals, fitnesses and selection.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from deap import base, creator

from metaprune.search.strategies.base import Genes, Stage, Strategy

if TYPE_CHECKING:
    from metaprune.search.evolution import Evolution


def deap_classes(n_objectives: int) -> tuple[type, type]:
    """The DEAP fitness and individual classes (``creator`` is global: create once)."""
    suffix = "Max" + "Min" * (n_objectives - 1)
    fit, ind = f"MetaPruneFitness{suffix}", f"MetaPruneIndividual{suffix}"
    if not hasattr(creator, fit):
        creator.create(fit, base.Fitness, weights=(1.0,) + (-1.0,) * (n_objectives - 1))
    if not hasattr(creator, ind):
        creator.create(ind, list, fitness=getattr(creator, fit))
    return getattr(creator, fit), getattr(creator, ind)


class EvolutionaryStrategy(Strategy):
    """Random generation 0, then mutation and crossover children of ``parent()`` draws and the
    random fill; fitness is accuracy, then the :meth:`fitness_costs` (minimised)."""

    def __init__(self, engine: Evolution) -> None:
        super().__init__(engine)
        _, self.Individual = deap_classes(1 + len(self.fitness_costs()))
        sp, ind, p, rng = engine.space, self.Individual, self.cfg.mutation_prob, engine.rng
        self.toolbox = base.Toolbox()
        self.toolbox.register("mutate", lambda a: ind(sp.mutate(sp.config(a), p, rng).indices))
        self.toolbox.register(
            "mate", lambda a, b: ind(sp.crossover(sp.config(a), sp.config(b), rng).indices)
        )

    def fitness_costs(self) -> list[str]:
        """Costs minimised in the fitness beside the maximised accuracy (none: accuracy only)."""
        return []

    def individuals(self, pop: Sequence[Sequence[int]]) -> list[Any]:
        """DEAP individuals with fitness (accuracy [, costs / max cost]) from the score cache."""
        eng, costs = self.engine, self.fitness_costs()
        out = []
        for genes in pop:
            ind = self.Individual(genes)
            row = eng.row(genes)
            vals = [row["accuracy"]]
            vals += [row[c] / eng.constraints.max_cost[c] for c in costs]
            ind.fitness.values = tuple(vals)
            out.append(ind)
        return out

    def children(self, parent: Callable[[], Genes], stage: Stage, n_parents: int) -> list[Genes]:
        """Mutation and crossover children of ``parent()`` draws, then the random fill."""
        cfg, tb, eng = self.cfg, self.toolbox, self.engine
        kids = eng.draw(cfg.mutation_children, lambda: tb.mutate(parent()), stage)
        if n_parents >= 2:
            kids += eng.draw(cfg.crossover_children, lambda: tb.mate(parent(), parent()), stage)
        kids += eng.draw_random(cfg.population - len(kids), stage)
        return [list(k) for k in kids]

    def propose(self, stage: Stage) -> list[Genes]:
        if self.engine.generation == 0:
            return self.engine.draw_random(self.cfg.population, stage)
        return self.offspring(stage)

    @abstractmethod
    def offspring(self, stage: Stage) -> list[Genes]:
        """The candidates of a generation after the first (usually :meth:`children`)."""
