"""Random search: the baseline an evolutionary search must beat (beyond MetaPruning, Liu et al.,
ICCV 2019, sec. 3.3, which compares its GA with no other search).

Every generation draws ``population`` fresh random candidates with the engine's own random
draws (those of the GA's generation 0 and random fill: uniform per gene, or aimed at a narrow
bound; each meeting the stage's bounds and new to the stage, so no network is drawn twice), for
the same budget as the GA (``population`` x ``generations`` per stage).  It is the paper's GA
with its variation switched off, so it keeps the GA's stages (one per target) and racing
rivalry, which makes the two comparable target by target; ``parents`` and the mutation and
crossover settings are ignored.  Deterministic given the seed and resumable like every strategy
(all its randomness is the engine's generator; no state of its own).
"""

from __future__ import annotations

from metaprune.search.strategies.base import Genes, Stage
from metaprune.search.strategies.ga import GeneticAlgorithm


class RandomSearch(GeneticAlgorithm):
    """``search.algorithm=random``: ``population`` new random feasible candidates a generation."""

    name = "random"

    def propose(self, stage: Stage) -> list[Genes]:
        return self.engine.draw_random(self.cfg.population, stage)
