"""The search engine: stages of generations over one shared score cache (MetaPruning, sec. 3.3).

The algorithm is a registered strategy (``search.algorithm``; :mod:`metaprune.search.strategies`:
``ga``, the paper's constrained evolution, and ``nsga2``); this engine is what every strategy
shares.  A search scores the uniform-width baselines, then runs the strategy's stages (the GA
runs once per target, NSGA-II once under the constraints), ``generations`` generations each:
the strategy proposes candidates, the engine scores the new ones and hands the population back.

Constraints: every candidate a strategy draws meets its stage's bounds and is new to the stage
(:meth:`Evolution.draw` rejects and redraws, as the paper's reference implementation does, so 50
x 20 generations visit 1,000 distinct networks).  A slot that finds none in ``max_redraws``
draws stays empty; the others are still filled.

Random candidates (generation 0, the random fill) are the paper's uniform per-gene draws where
those meet the stage's bounds often enough, and otherwise come from a proposal aimed at the
bound they meet least (:func:`metaprune.cost.proposal.propose`; departs from the paper).  The
rule (:meth:`Evolution.aim`): uniform when, by a pilot of uniform draws, a slot fills within
``max_redraws`` draws with probability at least :data:`UNIFORM_FILL`.  Wide bounds keep the
paper's draws, whose genes vary independently (the aimed ones share a width level); a narrow
band or a tight bound, which uniform draws rarely or never meet (on ResNet-50 they land at 0.31
+- 0.06 of the max FLOPs: 0.2 % of them in the paper's 1.95-2.05 G band), gets candidates at all.

Many constraints from one supernet: every stage shares one score cache keyed by the width tuple
(two configs with equal widths are one network), so no network is ever scored twice; each
target's winner is the best fully evaluated configuration meeting it, whichever stage scored it.

Determinism and resume: all randomness comes from one numpy ``Generator`` seeded by
``SearchConfig.seed``.  After every generation the state (stage, generation, population, visited
set, score cache, RNG state, strategy and scorer state) is written atomically as JSON, and
``resume=True`` continues from it exactly, or returns a finished search as it is, if the
search's identity (its settings and the caller's inputs: the PruningNet's content hash, the
data; :mod:`metaprune.engine.identity`) is unchanged; otherwise it stops with
:class:`~metaprune.engine.identity.StaleStageError` naming the keys that differ.  After each generation the engine reports to its
callbacks (:mod:`metaprune.search.callbacks`: the log line, TensorBoard).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.cost import cost_model
from metaprune.cost.proposal import propose
from metaprune.engine.identity import require_identity
from metaprune.io import CheckpointError, atomic_write_text, read_json
from metaprune.search.callbacks import Callback, GenerationReport, LogLine, TensorBoard
from metaprune.search.config import SearchConfig
from metaprune.search.constraints import Bound, Constraints, CostFn, InfeasibleConstraintError
from metaprune.search.pareto import pareto_mask
from metaprune.search.results import SearchRun, fully_evaluated, write_results
from metaprune.search.scoring.protocol import Scorer
from metaprune.search.strategies import Stage, strategy_class
from metaprune.search.strategies.base import Genes
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

UNIFORM_FILL = 0.999
"""Least probability that uniform draws fill a slot within ``max_redraws`` for a stage to keep
them (with 200 redraws: at least 3.4 % of uniform draws meet the stage's bounds)."""
PILOT = 512
"""Uniform draws of the pilot that estimates how often a stage's bounds are met."""
PROPOSAL_BATCH = 256
"""Aimed candidates drawn per proposal call."""
STATE_FILE = "search_state.json"
STATE_VERSION = 2
Key = tuple[int, ...]
EXECUTION_ONLY = ("resume", "tensorboard", "latency_table")
"""Search settings outside the identity: how a run is executed or logged, and the latency
table's path (the caller's identity holds its content hash)."""


def default_costs(space: ChannelSpace, latency_model: Any = None) -> dict[str, CostFn]:
    """Cost functions of a space: exact ``flops`` and ``params``, and ``latency`` (ms) when a
    latency model with ``predict_many(configs)`` is given."""
    cm = cost_model(space)
    costs: dict[str, CostFn] = {"flops": cm.flops_many, "params": cm.params_many}
    if latency_model is not None:
        costs["latency"] = latency_model.predict_many
    return costs


def search_identity(cfg: SearchConfig) -> dict[str, Any]:
    """The search and scorer settings a search's results depend on (plain JSON)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_ONLY}
    d["scorer"] = cfg.scorer.identity()
    return json.loads(json.dumps(d))


def full_identity(cfg: SearchConfig, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A search's identity: its settings (:func:`search_identity`) under ``search`` and the
    caller's ``inputs`` (the PruningNet's hash, the data ...), as plain JSON."""
    if inputs is not None and "search" in inputs:
        raise ValueError("a search's identity key 'search' is its own settings; use another")
    return {"search": search_identity(cfg), **json.loads(json.dumps(dict(inputs or {})))}


def require_resumable(
    out_dir: str | Path, identity: Mapping[str, Any], state: Mapping[str, Any] | None = None
) -> None:
    """Raise :class:`~metaprune.engine.identity.StaleStageError` if ``out_dir`` holds a search
    checkpoint (running or finished; ``state`` when already read) of another ``identity``
    (:func:`full_identity`)."""
    path = Path(out_dir) / STATE_FILE
    if state is None:
        if not path.is_file():
            return
        state = read_json(path)
    fresh = f"delete {Path(out_dir)} or search into another directory"
    require_identity(path, state.get("identity"), identity, fresh)


def default_callbacks(cfg: SearchConfig, out_dir: str | Path, write: bool) -> list[Callback]:
    """The log line, and TensorBoard scalars in ``out_dir/tb`` when writing with
    ``cfg.tensorboard``."""
    out: list[Callback] = [LogLine()]
    if write and cfg.tensorboard:
        out.append(TensorBoard(Path(out_dir) / "tb"))
    return out


class Evolution:
    """The search engine (module docstring): a strategy's stages and generations over one
    shared score cache, with constraint rejection, checkpoints, resume, results and callbacks."""

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
        callbacks: Sequence[Callback] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        space.require_widths_only("the search")
        self.space, self.scorer, self.cfg = space, scorer, cfg.validate()
        self.out = Path(out_dir)
        self.write = write
        self.extra_meta = dict(extra_meta or {})
        self.identity = full_identity(cfg, identity)
        self.callbacks = list(
            default_callbacks(cfg, self.out, write) if callbacks is None else callbacks
        )
        self.constraints = Constraints(space, costs)
        self.base_bounds = self.constraints.resolve(cfg.constraints)
        self.targets = [
            self.constraints.resolve({cfg.cost: t}, f"target #{i}")[0]
            for i, t in enumerate(cfg.targets)
        ]
        self.rng = np.random.default_rng(cfg.seed)
        self.rows: list[dict[str, Any]] = []
        self.cache: dict[Key, int] = {}
        self.stage = 0
        self.generation = 0
        self.population: list[Genes] = []
        self.visited: set[Key] = set()
        self.baselines_done = False
        self.scorer_calls = 0
        self.strategy = strategy_class(cfg.algorithm)(self)
        # the primary cost (targets, results, plot) and the front's costs must be computable
        for name in dict.fromkeys([cfg.cost, *self.strategy.front_costs()]):
            if name not in self.constraints.costs:
                raise ValueError(
                    f"search cost {name!r} is not available; have {sorted(self.constraints.costs)}"
                    + (" (latency needs search.latency_table)" if name == "latency" else "")
                )
        self.stages = self.strategy.stages()
        self._check_stage_feasible()
        self.aims = {st.name: self.aim(i, st) for i, st in enumerate(self.stages)}
        set_rivalry = getattr(scorer, "set_rivalry", None)
        if callable(set_rivalry):
            set_rivalry(self.strategy.rivalry(self.stages))

    # -- set-up -----------------------------------------------------------------------------
    def _check_stage_feasible(self) -> None:
        """Joint upper bounds are feasible iff the minimal config meets them (monotone costs)."""
        values = self.constraints.evaluate([self.space.min()])
        for st in self.stages:
            uppers = [Bound(b.cost, None, b.upper) for b in st.bounds if b.upper is not None]
            if not Constraints.satisfied(values, uppers)[0]:
                smallest = ", ".join(f"{k}={float(v[0]):.6g}" for k, v in values.items())
                raise InfeasibleConstraintError(
                    f"stage {st.name}: no configuration meets all of "
                    f"{[b.describe() for b in st.bounds]}; the smallest config has {smallest}"
                )

    def aim(self, index: int, st: Stage) -> Bound | None:
        """The bound that random draws of stage ``index`` aim at, or ``None`` for the paper's
        uniform draws (the rule: module docstring).  The pilot uses a generator of its own,
        seeded by the search seed and the stage, so the search's stream is untouched."""
        if not st.bounds:
            return None
        pilot = np.random.default_rng([self.cfg.seed, index])
        values = self.constraints.evaluate([self.space.sample(pilot) for _ in range(PILOT)])
        met = float(Constraints.satisfied(values, st.bounds).mean())
        if 1.0 - (1.0 - met) ** self.cfg.max_redraws >= UNIFORM_FILL:
            return None
        rates = [float(b.mask(values[b.cost]).mean()) for b in st.bounds]
        return st.bounds[int(np.argmin(rates))]

    # -- state ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def state(self) -> dict[str, Any]:
        get_state = getattr(self.scorer, "state_dict", None)
        return {
            "version": STATE_VERSION,
            "space": self.space.fingerprint,
            "identity": self.identity,
            "stage": self.stage,
            "generation": self.generation,
            "population": self.population,
            "visited": [list(k) for k in sorted(self.visited)],
            "rows": self.rows,
            "baselines_done": self.baselines_done,
            "rng": self.rng.bit_generator.state,
            "strategy": self.strategy.state_dict(),
            "scorer": get_state() if callable(get_state) else None,
        }

    def load_state(self, st: Mapping[str, Any]) -> None:
        if st.get("version") != STATE_VERSION or st.get("space") != self.space.fingerprint:
            raise CheckpointError(
                f"{self.state_path} belongs to another space or version "
                f"(space {st.get('space')}, expected {self.space.fingerprint})"
            )
        require_resumable(self.out, self.identity, st)
        self.stage, self.generation = int(st["stage"]), int(st["generation"])
        self.population = [list(p) for p in st["population"]]
        self.visited = {tuple(k) for k in st["visited"]}
        self.rows = list(st["rows"])
        self.cache = {tuple(r["widths"]): i for i, r in enumerate(self.rows)}
        self.baselines_done = bool(st["baselines_done"])
        self.rng.bit_generator.state = st["rng"]
        self.strategy.load_state_dict(st.get("strategy") or {})
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

    def row(self, genes: Sequence[int]) -> dict[str, Any]:
        """The scored row of a candidate (it must have been scored)."""
        return self.rows[self.cache[self.space.config(genes).width_tuple()]]

    def feasible(self, config: ChannelConfig, bounds: Sequence[Bound]) -> bool:
        return bool(Constraints.satisfied(self.constraints.evaluate([config]), bounds)[0])

    # -- drawing candidates -----------------------------------------------------------------
    def draw(self, n: int, make: Callable[[], Sequence[int]], stage: Stage) -> list[Genes]:
        """Up to ``n`` new candidates from ``make()``, each meeting the stage's bounds and not
        yet visited (they join ``visited``); a slot gives up after ``max_redraws`` rejected
        draws and the next slot is tried."""
        out: list[Genes] = []
        for _ in range(n):
            for _ in range(self.cfg.max_redraws):
                genes = list(make())
                c = self.space.config(genes)
                k = c.width_tuple()
                if k not in self.visited and self.feasible(c, stage.bounds):
                    self.visited.add(k)
                    out.append(genes)
                    break
        return out

    def draw_random(self, n: int, stage: Stage) -> list[Genes]:
        """Up to ``n`` new random candidates meeting the stage's bounds: uniform draws (see
        :meth:`draw`), or aimed ones (:meth:`aim`) from at most ``n * max_redraws`` proposals."""
        aim = self.aims[stage.name]
        if aim is None:
            return self.draw(n, lambda: self.space.sample(self.rng).indices, stage)
        cost, out = self.constraints.costs[aim.cost], []
        budget = n * self.cfg.max_redraws
        while len(out) < n and budget > 0:
            k = min(budget, PROPOSAL_BATCH)
            budget -= k
            for c in propose(
                self.space, cost, (aim.lower, aim.upper), self.rng, n - len(out), max_draws=k
            ):
                key = c.width_tuple()
                if key not in self.visited and self.feasible(c, stage.bounds):
                    self.visited.add(key)
                    out.append(list(c.indices))
        return out

    # -- one generation ---------------------------------------------------------------------
    def run_generation(self, st: Stage) -> None:
        t0 = time.perf_counter()
        kids = self.strategy.propose(st)
        if self.generation == 0 and not kids:
            raise InfeasibleConstraintError(
                f"stage {st.name}: no configuration meeting "
                f"{[b.describe() for b in st.bounds]} found in {self.cfg.max_redraws} random "
                "draws; widen the constraint band or raise search.max_redraws"
            )
        scores = self.score([self.space.config(k) for k in kids], st.name, self.generation)
        self.population = self.strategy.survivors(kids)
        report = self.report(st, scores, time.perf_counter() - t0)
        for cb in self.callbacks:
            cb.on_generation(report)

    def report(self, st: Stage, scores: Sequence[float], seconds: float) -> GenerationReport:
        """The generation just scored: best over the stage's fully evaluated candidates (a
        racing estimate is no best), mean of this generation, size of the stage's front of fully
        evaluated candidates over the strategy's front costs."""
        rows = [r for k in self.visited if fully_evaluated(r := self.rows[self.cache[k]])]
        names = self.strategy.front_costs()
        acc = np.array([r["accuracy"] for r in rows])
        cost = np.array([[r[n] for n in names] for r in rows])
        return GenerationReport(
            stage=st.name,
            generation=self.generation,
            generations=self.cfg.generations,
            candidates=len(scores),
            best=float(acc.max()) if rows else float("nan"),
            mean=float(np.mean(scores)) if scores else float("nan"),
            front=int(pareto_mask(acc, cost).sum()) if rows else 0,
            seconds=seconds,
        )

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
                f"{self.out} already holds a search ({STATE_FILE}); pass resume=True "
                "(search.resume=true) to continue "
                "it or choose another output directory"
            )
        if not self.baselines_done:
            self.score([c for _, c in self.baseline_configs()], "baseline", -1)
            self.baselines_done = True
            self.checkpoint()
        try:
            while self.stage < len(self.stages):
                self.run_generation(self.stages[self.stage])
                self.generation += 1
                if self.generation >= self.cfg.generations:
                    self.stage, self.generation = self.stage + 1, 0
                    self.population, self.visited = [], set()
                self.checkpoint()
        finally:
            for cb in self.callbacks:
                cb.close()
        return self.finish()

    def finish(self) -> SearchRun:
        meta = {
            "space": self.space.describe(),
            "config": self.cfg.to_dict(),
            "identity": self.identity,
            "costs": sorted(self.constraints.costs),
            "front_costs": self.strategy.front_costs(),
            "max_cost": self.constraints.max_cost,
            "min_cost": self.constraints.min_cost,
            "constraints": [_bound_dict(b) for b in self.base_bounds],
            "stages": [
                {
                    "name": s.name,
                    "target": s.target,
                    "bounds": [_bound_dict(b) for b in s.bounds],
                    "random_draws_aim": _bound_dict(a) if (a := self.aims[s.name]) else None,
                }
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
    callbacks: Sequence[Callback] | None = None,
    identity: Mapping[str, Any] | None = None,
) -> SearchRun:
    """Run (or resume) a search of ``space`` scored by ``scorer`` under ``costs``.

    ``costs`` maps names (flops, params, latency) to functions of a list of configs (see
    :func:`default_costs`).  ``write=False`` (non-zero ranks of a distributed run) computes the
    same search without touching ``out_dir``.  ``callbacks`` replace the default log line and
    TensorBoard scalars (:func:`default_callbacks`).  ``identity`` names the inputs beyond the
    search settings that the result depends on (the PruningNet's hash, the data); with the
    settings (:func:`search_identity`) it is stored with every checkpoint and the results, and a
    resume whose identity differs raises :class:`~metaprune.engine.identity.StaleStageError`
    naming the keys.  Returns the finished :class:`SearchRun`.
    """
    engine = Evolution(
        space,
        scorer,
        costs,
        cfg,
        out_dir,
        write=write,
        extra_meta=extra_meta,
        callbacks=callbacks,
        identity=identity,
    )
    return engine.run()
