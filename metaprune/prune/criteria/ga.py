"""``ga``: channel selection by a genetic algorithm with a two-step approximate fitness (the GA
channel pruning of the project's sources, ``002_51206bcc8a307aec.txt`` f: "a two-step
approximation fitness function ... fine-tuned based on knowledge distillation").

Which channels of a gene to keep is a combinatorial problem; a GA searches it.  An individual is
a set of ``keep`` x the gene's channels (a binary mask with that many ones); the fitness is two-
step: every individual is scored cheaply, by the distortion of the logits against the unpruned
network on the first calibration batch (step one), and only the best ``elite`` x 2 are scored
exactly, by the cross-entropy on all ``batches`` calibration batches (step two), which ranks
them.  The ``elite`` best are the next generation's parents: children by crossover (a random
``keep``-subset of the parents' union) and mutation (each kept channel swapped for a dropped one
with probability ``mutation``).  The winner's channels score 1 plus half the share of the final
elite that keeps them, the others that share alone, so at the searched width a gene keeps the
GA's choice and at other widths (global allocation, by one threshold) the channels the elite
agree on.  Fine-tuning with distillation is ``prune.kd``.

Departures: the source prunes layer by layer at ratios from a sensitivity analysis; here each gene
is searched with every other gene at full width, and widths come from the allocation.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metaprune.prune.channels import Scores, gene_masks
from metaprune.prune.criterion import Batches, Criterion, register_criterion
from metaprune.space import ChannelSpace


@register_criterion
class GA(Criterion):
    name = "ga"
    normalise = None

    def __init__(
        self,
        keep: float = 0.5,
        population: int = 16,
        generations: int = 8,
        elite: int = 4,
        mutation: float = 0.1,
        batches: int = 2,
        seed: int = 0,
    ) -> None:
        if not 0 < keep <= 1 or elite < 2 or population < 2 * elite or batches < 1:
            raise ValueError(
                "needs keep in (0, 1], elite >= 2, population >= 2 * elite and batches >= 1, "
                f"got {keep}, {elite}, {population}, {batches}"
            )
        if generations < 1 or not 0 <= mutation <= 1:
            raise ValueError(f"needs generations >= 1, mutation in [0, 1], got {generations}")
        self.keep, self.population, self.generations = float(keep), population, generations
        self.elite, self.mutation, self.batches, self.seed = elite, float(mutation), batches, seed

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        model.eval()
        calib = list(itertools.islice(batches, self.batches))
        with torch.no_grad():
            ref = model(calib[0][0])
        rng = np.random.default_rng(self.seed)
        out = {}
        for gene in space.genes:
            k = max(1, round(self.keep * gene.max_channels))
            best, elite = self._search(
                model, space, gene.name, gene.max_channels, k, calib, ref, rng
            )
            share = torch.tensor(np.mean(elite, axis=0), dtype=torch.float32)
            out[gene.name] = torch.tensor(best, dtype=torch.float32) + 0.5 * share
        return out

    def _search(
        self,
        model: nn.Module,
        space: ChannelSpace,
        gene: str,
        size: int,
        k: int,
        calib: list[tuple[torch.Tensor, torch.Tensor]],
        ref: torch.Tensor,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(winner mask, final elite masks) of the GA over ``k``-of-``size`` masks of ``gene``."""

        def masked(mask: np.ndarray, x: torch.Tensor) -> torch.Tensor:
            m = torch.tensor(mask, dtype=x.dtype, device=x.device)
            with torch.no_grad(), gene_masks(model, space, {gene: m}):
                return model(x)

        def cheap(mask: np.ndarray) -> float:  # step one
            return float(F.mse_loss(masked(mask, calib[0][0]), ref))

        def exact(mask: np.ndarray) -> float:  # step two
            return float(sum(F.cross_entropy(masked(mask, x), y) for x, y in calib))

        def subset(pool: np.ndarray) -> np.ndarray:
            mask = np.zeros(size)
            mask[rng.choice(pool, size=k, replace=False)] = 1.0
            return mask

        every = np.arange(size)
        pop = [subset(every) for _ in range(self.population)]
        for _ in range(self.generations):
            shortlist = sorted(pop, key=cheap)[: 2 * self.elite]
            elite = sorted(shortlist, key=exact)[: self.elite]
            children = list(elite)
            while len(children) < self.population:
                a, b = rng.choice(len(elite), size=2, replace=False)
                child = subset(np.flatnonzero(np.maximum(elite[a], elite[b])))
                for i in np.flatnonzero(child):
                    dropped = np.flatnonzero(child == 0)
                    if len(dropped) and rng.random() < self.mutation:
                        child[i], child[rng.choice(dropped)] = 0.0, 1.0
                children.append(child)
            pop = children
        return elite[0], np.stack(elite)
