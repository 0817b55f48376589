"""Evolutionary search over channel configurations with DEAP (MetaPruning, sec. 3.3).

``ga`` is the paper's search: generation 0 is drawn at random; every later generation has
``mutation_children`` children of a parent mutated gene by gene (probability ``mutation_prob``),
``crossover_children`` children of two parents by uniform crossover, and random candidates filling
the population; the parents are the top ``parents`` candidates seen so far.  A candidate that
violates a constraint, or that this search has already visited, is rejected and redrawn (as in the
paper's reference implementation, so 50 x 20 generations visit 1,000 distinct networks).

``nsga2`` goes beyond the paper: accuracy and one or more costs are objectives of DEAP's NSGA-II
(``tools.selNSGA2``); parents are picked by binary tournament on (front rank, crowding distance)
and the result is the non-dominated front of everything scored.

Many constraints from one supernet: with ``targets`` the ``ga`` runs once per target (a bound on
the primary cost added to the constraints), and every stage shares one score cache keyed by the
width tuple (two configs with equal widths are one network), so no network is ever scored twice;
each target's winner is the best scored configuration meeting it, whichever stage scored it.

Determinism and resume: all randomness comes from one numpy ``Generator`` seeded by
``SearchConfig.seed`` (DEAP's operators use the global ``random`` module, so the variation
operators here are the space's own, wrapped in a DEAP toolbox).  After every generation the
state (stage, generation, population, visited set, score cache, RNG state, scorer state) is
written atomically as JSON, and ``resume=True`` continues from it exactly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from deap import base, creator, tools
from deap.tools.emo import assignCrowdingDist

from metaprune.cost import cost_model
from metaprune.io import CheckpointError, atomic_write_text, read_json
from metaprune.search.config import SearchConfig, config_diff
from metaprune.search.constraints import Bound, Constraints, CostFn, InfeasibleConstraintError
from metaprune.search.pareto import pareto_mask
from metaprune.search.results import SearchRun, write_results
from metaprune.search.scoring.protocol import Scorer
from metaprune.search.scoring.racing import Rivalry
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

STATE_FILE = "search_state.json"
STATE_VERSION = 1
Key = tuple[int, ...]


def default_costs(space: ChannelSpace, latency_model: Any = None) -> dict[str, CostFn]:
    """Cost functions of a space: exact ``flops`` and ``params``, and ``latency`` (ms) when a
    latency model with ``predict_many(configs)`` is given."""
    cm = cost_model(space)
    costs: dict[str, CostFn] = {"flops": cm.flops_many, "params": cm.params_many}
    if latency_model is not None:
        costs["latency"] = latency_model.predict_many
    return costs


def _deap_classes(n_objectives: int) -> tuple[type, type]:
    """The DEAP fitness and individual classes (``creator`` is global: create once)."""
    suffix = "Max" + "Min" * (n_objectives - 1)
    fit, ind = f"MetaPruneFitness{suffix}", f"MetaPruneIndividual{suffix}"
    if not hasattr(creator, fit):
        creator.create(fit, base.Fitness, weights=(1.0,) + (-1.0,) * (n_objectives - 1))
    if not hasattr(creator, ind):
        creator.create(ind, list, fitness=getattr(creator, fit))
    return getattr(creator, fit), getattr(creator, ind)


@dataclass
class Stage:
    """One evolutionary run inside a search: its name, its target spec and all its bounds."""

    name: str
    target: Any
    bounds: list[Bound]


def _key_str(key: Key) -> str:
    return ",".join(map(str, key))


class Evolution:
    """The search engine: stages of GA or NSGA-II generations over one shared score cache."""

    def __init__(
        self,
        space: ChannelSpace,
        scorer: Scorer,
        costs: Mapping[str, CostFn],
        cfg: SearchConfig,
        out_dir: str | Path,
        *,
        write: bool = True,
        extra_meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.space, self.scorer, self.cfg = space, scorer, cfg.validate()
        self.out = Path(out_dir)
        self.write = write
        self.extra_meta = dict(extra_meta or {})
        self.constraints = Constraints(space, costs)
        self.base_bounds = self.constraints.resolve(cfg.constraints)
        for name in ([cfg.cost] if cfg.targets else []) + (
            list(cfg.objectives) if cfg.algorithm == "nsga2" else []
        ):
            if name not in self.constraints.costs:
                raise ValueError(
                    f"search cost {name!r} is not available; have {sorted(self.constraints.costs)}"
                )
        self.targets = [
            self.constraints.resolve({cfg.cost: t}, f"target #{i}")[0]
            for i, t in enumerate(cfg.targets)
        ]
        self.stages = self._make_stages()
        self._check_stage_feasible()
        set_rivalry = getattr(scorer, "set_rivalry", None)
        if callable(set_rivalry):
            set_rivalry(self.rivalry())
        n_obj = 1 + (len(cfg.objectives) if cfg.algorithm == "nsga2" else 0)
        self.Fitness, self.Individual = _deap_classes(n_obj)
        self.toolbox = self._make_toolbox()
        self.rows: list[dict[str, Any]] = []
        self.cache: dict[Key, int] = {}
        self.rng = np.random.default_rng(cfg.seed)
        self.stage = 0
        self.generation = 0
        self.population: list[list[int]] = []
        self.visited: set[Key] = set()
        self.baselines_done = False
        self.scorer_calls = 0
        self._tb = None

    # -- set-up -----------------------------------------------------------------------------
    def _make_stages(self) -> list[Stage]:
        if self.cfg.algorithm == "ga" and self.targets:
            return [
                Stage(f"target_{i}", t, [*self.base_bounds, b])
                for i, (t, b) in enumerate(zip(self.cfg.targets, self.targets, strict=True))
            ]
        return [Stage("search", None, list(self.base_bounds))]

    def rivalry(self) -> Rivalry:
        """Whom a racing scorer's candidates race against: in the GA the leaders of each stage
        (its bounds), in NSGA-II the candidates that cost no more in every objective."""
        if self.cfg.algorithm == "ga":
            groups = [st.bounds for st in self.stages]
            return Rivalry(self.constraints.costs, groups, [self.cfg.cost])
        return Rivalry(self.constraints.costs, (), list(self.cfg.objectives))

    def _check_stage_feasible(self) -> None:
        """Joint upper bounds are feasible iff the minimal config meets them (monotone costs)."""
        ends = [self.space.min()]
        values = self.constraints.evaluate(ends)
        for st in self.stages:
            uppers = [Bound(b.cost, None, b.upper) for b in st.bounds if b.upper is not None]
            if not Constraints.satisfied(values, uppers)[0]:
                smallest = ", ".join(f"{k}={float(v[0]):.6g}" for k, v in values.items())
                raise InfeasibleConstraintError(
                    f"stage {st.name}: no configuration meets all of "
                    f"{[b.describe() for b in st.bounds]}; the smallest config has {smallest}"
                )

    def _make_toolbox(self) -> base.Toolbox:
        sp, ind, p = self.space, self.Individual, self.cfg.mutation_prob
        tb = base.Toolbox()
        tb.register("random", lambda: ind(sp.sample(self.rng).indices))
        tb.register("mutate", lambda a: ind(sp.mutate(sp.config(a), p, self.rng).indices))
        tb.register(
            "mate", lambda a, b: ind(sp.crossover(sp.config(a), sp.config(b), self.rng).indices)
        )
        tb.register("select_best", tools.selBest)
        tb.register("select_nsga2", tools.selNSGA2)
        return tb

    # -- state ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def state(self) -> dict[str, Any]:
        get_state = getattr(self.scorer, "state_dict", None)
        return {
            "version": STATE_VERSION,
            "space": self.space.fingerprint,
            "config": self.cfg.to_dict(),
            "stage": self.stage,
            "generation": self.generation,
            "population": self.population,
            "visited": [list(k) for k in sorted(self.visited)],
            "rows": self.rows,
            "baselines_done": self.baselines_done,
            "rng": self.rng.bit_generator.state,
            "scorer": get_state() if callable(get_state) else None,
        }

    def load_state(self, st: Mapping[str, Any]) -> None:
        if st.get("version") != STATE_VERSION or st.get("space") != self.space.fingerprint:
            raise CheckpointError(
                f"{self.state_path} belongs to another space or version "
                f"(space {st.get('space')}, expected {self.space.fingerprint})"
            )
        diff = config_diff(st["config"], self.cfg.to_dict(), ignore=("resume", "tensorboard"))
        if diff:
            raise CheckpointError(
                f"cannot resume {self.state_path}: search config differs in {diff}"
            )
        self.stage, self.generation = int(st["stage"]), int(st["generation"])
        self.population = [list(p) for p in st["population"]]
        self.visited = {tuple(k) for k in st["visited"]}
        self.rows = list(st["rows"])
        self.cache = {tuple(r["widths"]): i for i, r in enumerate(self.rows)}
        self.baselines_done = bool(st["baselines_done"])
        self.rng.bit_generator.state = st["rng"]
        load = getattr(self.scorer, "load_state_dict", None)
        if st.get("scorer") is not None and callable(load):
            load(st["scorer"])

    def checkpoint(self) -> None:
        if self.write:  # compact JSON: the C encoder, so a checkpoint costs milliseconds
            atomic_write_text(self.state_path, json.dumps(self.state(), separators=(",", ":")))

    # -- scoring ----------------------------------------------------------------------------
    def score(self, configs: Sequence[ChannelConfig], stage: str, gen: int) -> list[float]:
        """Scores of ``configs``; only configs whose width tuple is not cached reach the scorer."""
        keys = [c.width_tuple() for c in configs]
        new: dict[Key, ChannelConfig] = {}
        for k, c in zip(keys, configs, strict=True):
            if k not in self.cache and k not in new:
                new[k] = c
        if new:
            todo = list(new.values())
            scores = [float(s) for s in self.scorer.score(todo)]
            self.scorer_calls += 1
            if len(scores) != len(todo) or not all(np.isfinite(scores)):
                raise ValueError(
                    f"scorer returned {len(scores)} scores for {len(todo)} configs "
                    f"(or a non-finite one): {scores[:5]}"
                )
            details = getattr(self.scorer, "last_details", None) or [{}] * len(todo)
            values = self.constraints.evaluate(todo)
            for i, (k, c) in enumerate(new.items()):
                row = {
                    "id": len(self.rows),
                    "genes": list(c.indices),
                    "widths": list(k),
                    "accuracy": scores[i],
                    "stage": stage,
                    "generation": gen,
                    **{name: _plain_number(v[i]) for name, v in values.items()},
                    **details[i],
                }
                self.cache[k] = len(self.rows)
                self.rows.append(row)
        return [self.rows[self.cache[k]]["accuracy"] for k in keys]

    def feasible(self, config: ChannelConfig, bounds: Sequence[Bound]) -> bool:
        return bool(Constraints.satisfied(self.constraints.evaluate([config]), bounds)[0])

    # -- variation --------------------------------------------------------------------------
    def draw(
        self, n: int, make: Callable[[], list[int]], bounds: Sequence[Bound], taken: set[Key]
    ) -> list[list[int]]:
        """Up to ``n`` new individuals from ``make()``, each meeting ``bounds`` and not in
        ``taken`` (which grows); a slot gives up after ``max_redraws`` rejected draws."""
        out: list[list[int]] = []
        for _ in range(n):
            for _ in range(self.cfg.max_redraws):
                ind = make()
                c = self.space.config(ind)
                k = c.width_tuple()
                if k not in taken and self.feasible(c, bounds):
                    taken.add(k)
                    out.append(ind)
                    break
            else:
                break
        return out

    def children(
        self, parent: Callable[[], list[int]], st: Stage, n_parents: int
    ) -> list[list[int]]:
        """Mutation and crossover children of ``parent()`` draws, then the random fill."""
        cfg, tb, taken = self.cfg, self.toolbox, self.visited
        kids = self.draw(cfg.mutation_children, lambda: tb.mutate(parent()), st.bounds, taken)
        if n_parents >= 2:
            mate = lambda: tb.mate(parent(), parent())  # noqa: E731
            kids += self.draw(cfg.crossover_children, mate, st.bounds, taken)
        kids += self.draw(cfg.population - len(kids), tb.random, st.bounds, taken)
        return kids

    # -- one generation ---------------------------------------------------------------------
    def individuals(self, pop: Sequence[Sequence[int]]) -> list[Any]:
        """DEAP individuals with fitness (accuracy [, normalised objective costs]) from cache."""
        out = []
        for genes in pop:
            ind = self.Individual(genes)
            row = self.rows[self.cache[self.space.config(genes).width_tuple()]]
            vals = [row["accuracy"]]
            if self.cfg.algorithm == "nsga2":
                vals += [row[o] / self.constraints.max_cost[o] for o in self.cfg.objectives]
            ind.fitness.values = tuple(vals)
            out.append(ind)
        return out

    def ga_generation(self, st: Stage) -> list[list[int]]:
        if self.generation == 0:
            return self.draw(self.cfg.population, self.toolbox.random, st.bounds, self.visited)
        seen = [r for r in self.rows if tuple(r["widths"]) in self.visited]
        inds = self.individuals([r["genes"] for r in seen])
        parents = self.toolbox.select_best(inds, min(self.cfg.parents, len(inds)))
        pick = lambda: list(parents[int(self.rng.integers(len(parents)))])  # noqa: E731
        return self.children(pick, st, len(parents))

    def nsga2_generation(self, st: Stage) -> list[list[int]]:
        if self.generation == 0:
            return self.draw(self.cfg.population, self.toolbox.random, st.bounds, self.visited)
        pop = self.individuals(self.population)
        rank = _rank_and_crowding(pop)

        def tournament() -> list[int]:
            i, j = (int(v) for v in self.rng.integers(len(pop), size=2))
            ki = (rank[i], -pop[i].fitness.crowding_dist)
            kj = (rank[j], -pop[j].fitness.crowding_dist)
            return list(pop[i] if ki <= kj else pop[j])

        return self.children(tournament, st, len(pop))

    def run_generation(self, st: Stage) -> None:
        t0 = time.perf_counter()
        step = self.ga_generation if self.cfg.algorithm == "ga" else self.nsga2_generation
        kids = step(st)
        if self.generation == 0 and not kids:
            raise InfeasibleConstraintError(
                f"stage {st.name}: no configuration meeting "
                f"{[b.describe() for b in st.bounds]} found in {self.cfg.max_redraws} random "
                "draws; widen the constraint band or raise search.max_redraws"
            )
        scores = self.score([self.space.config(k) for k in kids], st.name, self.generation)
        if self.cfg.algorithm == "nsga2":
            union = self.individuals(self.population + kids)
            chosen = self.toolbox.select_nsga2(union, min(self.cfg.population, len(union)))
            self.population = [list(ind) for ind in chosen]
        else:
            self.population = kids
        self.log_generation(st, scores, time.perf_counter() - t0)

    # -- logging ----------------------------------------------------------------------------
    def stage_front_size(self, st: Stage) -> int:
        rows = [r for r in self.rows if tuple(r["widths"]) in self.visited]
        names = self.cfg.objectives if self.cfg.algorithm == "nsga2" else [self.cfg.cost]
        acc = np.array([r["accuracy"] for r in rows])
        cost = np.array([[r[n] for n in names] for r in rows])
        return int(pareto_mask(acc, cost).sum()) if rows else 0

    def log_generation(self, st: Stage, scores: Sequence[float], seconds: float) -> None:
        visited = [self.rows[self.cache[k]]["accuracy"] for k in self.visited]
        best = max(visited) if visited else float("nan")
        mean = float(np.mean(scores)) if scores else float("nan")
        front = self.stage_front_size(st)
        log.info(
            "%s gen %d/%d: %d candidates, best %.4f, mean %.4f, front %d, %.1fs",
            st.name,
            self.generation + 1,
            self.cfg.generations,
            len(scores),
            best,
            mean,
            front,
            seconds,
        )
        if self.write and self.cfg.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            for tag, v in (("best", best), ("mean", mean), ("front_size", front)):
                self._tb.add_scalar(f"{st.name}/{tag}", v, self.generation)
            self._tb.flush()

    # -- the whole search -------------------------------------------------------------------
    def baseline_configs(self) -> list[tuple[float, ChannelConfig]]:
        """Uniform-width configs nearest to ``baseline_ratios`` (each choice once)."""
        out: dict[float, ChannelConfig] = {}
        for r in self.cfg.baseline_ratios:
            config = self.space.uniform(r, nearest=True)
            out.setdefault(self.space.ratios[config.indices[0]], config)
        return sorted(out.items())

    def run(self) -> SearchRun:
        if self.cfg.resume and self.state_path.is_file():
            self.load_state(read_json(self.state_path))
            log.info("resumed %s at stage %d generation %d", self.out, self.stage, self.generation)
        elif self.write and self.state_path.is_file():
            raise CheckpointError(
                f"{self.out} already holds a search ({STATE_FILE}); pass resume=True to continue "
                "it or choose another output directory"
            )
        if not self.baselines_done:
            self.score([c for _, c in self.baseline_configs()], "baseline", -1)
            self.baselines_done = True
            self.checkpoint()
        while self.stage < len(self.stages):
            st = self.stages[self.stage]
            self.run_generation(st)
            self.generation += 1
            if self.generation >= self.cfg.generations:
                self.stage, self.generation = self.stage + 1, 0
                self.population, self.visited = [], set()
            self.checkpoint()
        if self._tb is not None:
            self._tb.close()
        return self.finish()

    def finish(self) -> SearchRun:
        meta = {
            "space": self.space.describe(),
            "config": self.cfg.to_dict(),
            "costs": sorted(self.constraints.costs),
            "max_cost": self.constraints.max_cost,
            "min_cost": self.constraints.min_cost,
            "constraints": [_bound_dict(b) for b in self.base_bounds],
            "stages": [
                {"name": s.name, "target": s.target, "bounds": [_bound_dict(b) for b in s.bounds]}
                for s in self.stages
            ],
            "targets": [
                {"target": t, "bounds": [_bound_dict(b) for b in [*self.base_bounds, tb]]}
                for t, tb in zip(self.cfg.targets, self.targets, strict=True)
            ],
            "baselines": [
                {"ratio": r, "widths": list(c.width_tuple())} for r, c in self.baseline_configs()
            ],
            "scorer_calls": self.scorer_calls,
            **self.extra_meta,
        }
        if self.write:
            write_results(self.out, self.rows, meta=meta)
        return SearchRun(self.out, meta, self.rows, space=self.space)


def _rank_and_crowding(pop: list[Any]) -> list[int]:
    """Front rank of each individual (0 = non-dominated), crowding distances assigned in place."""
    rank = [0] * len(pop)
    index = {id(ind): i for i, ind in enumerate(pop)}
    for r, front in enumerate(tools.sortNondominated(pop, len(pop))):
        assignCrowdingDist(front)
        for ind in front:
            rank[index[id(ind)]] = r
    return rank


def _bound_dict(b: Bound) -> dict[str, Any]:
    return {"cost": b.cost, "lower": b.lower, "upper": b.upper}


def _plain_number(v: Any) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def run_search(
    space: ChannelSpace,
    scorer: Scorer,
    costs: Mapping[str, CostFn],
    cfg: SearchConfig,
    out_dir: str | Path,
    *,
    write: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
) -> SearchRun:
    """Run (or resume) a search of ``space`` scored by ``scorer`` under ``costs``.

    ``costs`` maps names (flops, params, latency) to functions of a list of configs (see
    :func:`default_costs`).  ``write=False`` (non-zero ranks of a distributed run) computes the
    same search without touching ``out_dir``.  Returns the finished :class:`SearchRun`.
    """
    return Evolution(space, scorer, costs, cfg, out_dir, write=write, extra_meta=extra_meta).run()
