"""Surrogate-assisted screening of the GA's children (``search.surrogate``; beyond MetaPruning,
Liu et al., ICCV 2019, sec. 3.3, whose GA scores every child with the PruningNet proxy).

In every generation after the first, the GA with a surrogate draws ``surrogate_pool`` times its
usual children (mutation, crossover and random fill of the same parents; each meeting the
stage's bounds and new to it), a small regressor fitted on every fully evaluated row scored so
far (any stage: one cache) predicts their accuracy, and only the top ``surrogate_scored`` of
them by prediction (default ``population``) are scored.  The others are handed back to the
engine unvisited, so a later generation may draw and screen them again.  Generation 0 is the
GA's: ``population`` random candidates, all scored, the surrogate's first data.

The surrogate only chooses whom to score: the engine's rows are scored configs only, so winners,
fronts and the GA's parents come from proxy scores, never from a prediction (an unscored config
cannot win).  It is refitted from the scored rows each generation and so keeps no state: a
resumed search refits the same model from the same rows.  After each generation the Kendall tau
between its predictions and the scores of the children it picked is logged, and each newly
scored child's row keeps its prediction (``surrogate``).

Surrogates (:data:`SURROGATES`): ``ridge``, a ridge regression on each gene's one-hot choice
plus the primary cost as a fraction of the largest network's (numpy; an additive model of the
genes, which suits accuracy that grows smoothly with each layer's width).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from metaprune.cost.latency import kendall_tau
from metaprune.search.results import fully_evaluated
from metaprune.search.strategies.base import Genes

if TYPE_CHECKING:
    from metaprune.search.evolution import Evolution

log = logging.getLogger(__name__)


class Surrogate(ABC):
    """A regressor from candidate features to accuracy."""

    name: ClassVar[str]
    """The ``search.surrogate`` value that selects it."""

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> Surrogate:
        """Fit on features ``x`` (n, d) and accuracies ``y`` (n,); returns itself."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted accuracies of the rows of ``x``."""


class Ridge(Surrogate):
    """Ridge regression with an unpenalised intercept (closed form)."""

    name = "ridge"
    alpha = 1.0
    """L2 penalty on the centred least-squares weights."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Ridge:
        self.mean_x, self.mean_y = x.mean(axis=0), float(y.mean())
        xc = x - self.mean_x
        gram = xc.T @ xc + self.alpha * np.eye(x.shape[1])
        self.w = np.linalg.solve(gram, xc.T @ (y - self.mean_y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_x) @ self.w + self.mean_y


SURROGATES: dict[str, type[Surrogate]] = {cls.name: cls for cls in (Ridge,)}
"""Every registered surrogate by its ``search.surrogate`` name."""


class Screen:
    """The GA's surrogate screen over ``engine`` (module docstring)."""

    def __init__(self, engine: Evolution) -> None:
        cfg = engine.cfg
        self.engine = engine
        self.model_class = SURROGATES[str(cfg.surrogate)]
        self.pool = cfg.surrogate_pool
        self.scored = cfg.surrogate_scored or cfg.population
        self.predicted: dict[tuple[int, ...], float] = {}

    def features(self, genes: Sequence[Sequence[int]], cost: Sequence[float]) -> np.ndarray:
        """One-hot choice per gene, then the primary cost / the largest network's."""
        eng = self.engine
        g = np.asarray(genes, dtype=np.int64).reshape(len(genes), len(eng.space.genes))
        n_choices = len(eng.space.ratios)
        onehot = np.zeros((g.shape[0], g.shape[1] * n_choices))
        onehot[np.arange(g.shape[0])[:, None], g + n_choices * np.arange(g.shape[1])] = 1.0
        ratio = np.asarray(cost, dtype=np.float64) / eng.constraints.max_cost[eng.cfg.cost]
        return np.concatenate([onehot, ratio[:, None]], axis=1)

    def select(self, make: Callable[[], list[Genes]]) -> list[Genes]:
        """``pool`` rounds of ``make()`` (new, feasible candidates that join the engine's visited
        set), ranked by a surrogate fitted on the scored rows; the top ``scored`` are returned,
        the rest leave the visited set again."""
        eng = self.engine
        pool: list[Genes] = []
        for _ in range(self.pool):
            pool += make()
        self.predicted = {}
        if len(pool) <= self.scored:
            return pool
        rows = [r for r in eng.rows if fully_evaluated(r)]
        cost = eng.cfg.cost
        model = self.model_class().fit(
            self.features([r["genes"] for r in rows], [r[cost] for r in rows]),
            np.array([r["accuracy"] for r in rows], dtype=np.float64),
        )
        configs = [eng.space.config(g) for g in pool]
        pred = model.predict(self.features(pool, eng.constraints.evaluate(configs)[cost]))
        order = np.argsort(-pred, kind="stable")
        keep = [pool[i] for i in order[: self.scored]]
        for i in order[self.scored :]:
            eng.visited.discard(configs[i].width_tuple())
        self.predicted = {configs[i].width_tuple(): float(pred[i]) for i in order[: self.scored]}
        return keep

    def report(self, kids: Sequence[Genes]) -> float | None:
        """After the picked children are scored: each new row keeps its prediction, and the
        Kendall tau of predictions and full scores is logged and returned (``None`` without a
        screened generation or with fewer than two fully evaluated children)."""
        eng, pred, acc = self.engine, [], []
        for genes in kids:
            key = eng.space.config(genes).width_tuple()
            if key not in self.predicted:
                continue
            row = eng.row(genes)
            row.setdefault("surrogate", self.predicted[key])
            if fully_evaluated(row):
                pred.append(self.predicted[key])
                acc.append(row["accuracy"])
        self.predicted = {}
        if len(pred) < 2:
            return None
        tau = kendall_tau(pred, acc)
        log.info(
            "surrogate %s: Kendall tau %.3f of predicted and scored accuracy over %d children "
            "(generation %d)",
            eng.cfg.surrogate,
            tau,
            len(pred),
            eng.generation,
        )
        return tau
