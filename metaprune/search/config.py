"""Configuration schema of the ``search`` group (MetaPruning, Liu et al., ICCV 2019, sec. 3.3).

The defaults are the paper's: a population of 50 evolved for 20 generations, the top 10 as
parents, 25 children by mutation (each gene redrawn with probability 0.1), 25 by uniform
crossover, the rest drawn at random; candidates violating a constraint are rejected and redrawn.
Beyond the paper: the other strategies' settings (``rl``) and the GA's surrogate screening
(``surrogate*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from metaprune.engine.runtime import resolve_amp
from metaprune.groups import to_dataclass
from metaprune.search.constraints import check_bound_syntax

COSTS = ("flops", "params", "latency")
LATER_OPTIONS = ("rl", "surrogate", "surrogate_pool", "surrogate_scored")
"""Search options added after searches were stored: in :meth:`SearchConfig.to_dict` (and so
in identities) only when not at their defaults."""
SCORER_EXECUTION_ONLY = ("device", "resident_mb", "eval_batch_size", "channels_last", "fuse_bn")
"""Scorer settings outside the identity: where and in which layout or batching the same
numbers are computed (results move only by rounding); precision (``amp``) is in."""


@dataclass
class ScorerConfig:
    """How a candidate is scored by the proxy (PruningNet weights, BN recalibration, accuracy)."""

    recalib_batches: int = 16
    """Training batches cached once and reused to recalibrate BN statistics of every candidate."""
    recalib_batch_size: int = 64
    """Images per recalibration batch."""
    recalib_augment: bool = True
    """Recalibrate on augmented training batches (the paper's training batches) or on clean
    ones (like the images candidates are scored on); either way a shuffled, class-mixed draw
    (``metaprune.data.recalib``)."""
    resident_mb: float = 1024.0
    """Device memory (MiB, as float32) up to which the search split and the recalibration
    images stay on the device; larger sets (ImageNet size) are streamed batch by batch from host
    memory in their stored dtype (``metaprune.data.feed``).  Scores are the same either way."""
    eval_batch_size: int | None = None
    """Images per forward pass when scoring on the search split (inference mode); null = 1024
    on CUDA, 256 on CPU (larger batches fall out of the CPU caches)."""
    search_limit: int | None = None
    """Use at most this many images of the search split (null = all of it)."""
    racing: bool = True
    """Stop evaluating a candidate early once it clearly cannot be a leader of any target it
    meets (see ``scoring/racing.py``)."""
    racing_slice: float = 0.0625
    """Fraction of the search split seen before the first early-stopping test; it doubles after
    each test (successive halving) until the whole split is seen."""
    racing_top_k: int = 10
    """A candidate stops only when, in every target it meets, at least this many fully
    evaluated candidates meeting that target beat it, so each target's top-k (keep it >= the
    GA's ``parents``) is always fully evaluated and ranked as by full evaluation."""
    racing_z: float = 2.5
    """Confidence of the paired test: a rival beats a candidate if their mean per-image
    difference exceeds z standard errors.  Larger z stops fewer candidates: slower, but closer
    scores for the stopped ones (in ``BENCHMARKS.md``, ResNet-20: z 2.5 gave 1.55x the plain
    scorer at Kendall tau 0.91 against full evaluation, z 2 1.62x at 0.80 before the stopped
    scores came from a fit); the leaders are exact at any z."""
    racing_recalib: float = 0.25
    """Share of the recalibration batches used before the first early-stopping test; the rest
    only for candidates that pass it (1.0 = always recalibrate fully first)."""
    stack: int = 1
    """Candidates scored side by side in one network (``PrunedNet(stack=K)``: grouped convs,
    each member zero-padded to the widest), in waves of this many.  The fully evaluated scores
    are those of one at a time; with racing, a wave races against the candidates scored before
    it (not against its own members), so which candidates stop early, and the stopped ones'
    predicted scores, can differ from ``stack=1``.  K times fewer kernel launches, for GPUs
    that small networks leave idle between launches (not yet measured on one).  The padding
    costs FLOPs (waves of 4 of a ResNet-20 GA stream: 1.46x their own), and on a 2-core CPU
    waves of 4 took 1.3-2.5x the time of one at a time: keep 1 on CPU (``BENCHMARKS.md``)."""
    fuse_bn: bool = True
    """Fold BN into the convolutions after recalibration (exact in eval mode, faster)."""
    amp: str = "auto"
    """Scoring precision: ``auto`` (bf16 autocast on CUDA and on a CPU that computes bf16
    natively, AVX-512 BF16 or AMX; float32 on other CPUs), ``bf16`` (everywhere; emulated and
    slow on other CPUs) or ``off`` (float32).  On the 2-core AMD EPYC (AVX-512 BF16) of
    ``BENCHMARKS.md`` bf16 scored 1.45-1.72x faster than float32.  Identities hold what it
    resolves to here (:meth:`precision`), so scores of another precision are never reused."""
    channels_last: bool = True
    """Channels-last memory format (faster convolutions on CUDA and on CPU)."""
    seed: int = 0
    """Seed of the fixed choice of recalibration batches and of the search-split order."""
    device: str = "auto"
    """``auto`` (CUDA when available, ``cuda:LOCAL_RANK`` under torchrun), ``cpu``, ``cuda:0``."""

    def amp_dtype(self, device: torch.device | str) -> torch.dtype | None:
        """The autocast dtype of :attr:`amp` when scoring on ``device`` (``None``: float32)."""
        cuda = torch.device(device).type == "cuda"
        return resolve_amp(self.amp, "search.scorer.amp", cuda, native_cpu_auto=True)

    def precision(self) -> str:
        """``bf16`` or ``fp32``: :attr:`amp` on the device :attr:`device` names here."""
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.amp_dtype(auto if self.device == "auto" else self.device)
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

    def identity(self) -> dict[str, Any]:
        """The settings scores depend on (plain values): all but
        :data:`SCORER_EXECUTION_ONLY`, with ``amp`` as :meth:`precision`."""
        d = {k: v for k, v in asdict(self).items() if k not in SCORER_EXECUTION_ONLY}
        d["amp"] = self.precision()
        return d


@dataclass
class RLConfig:
    """``search.algorithm=rl``: the LSTM controller and its REINFORCE training
    (``strategies/rl.py``)."""

    lr: float = 0.03
    """Adam learning rate of the controller."""
    entropy_weight: float = 0.05
    """Weight of the entropy bonus (mean per-sample entropy of the emitted choices)."""
    baseline_decay: float = 0.7
    """Decay of the moving averages of the reward (the baseline) and of the squared advantage
    (its scale): ``avg = decay * avg + (1 - decay) * batch mean``."""
    hidden: int = 64
    """Hidden size of the LSTM cell (and of the choice embeddings)."""
    gene_features: bool = True
    """Feed the scorer's per-gene feature vectors (``gene_features()``, when it offers them,
    e.g. a graph-encoded PruningNet's node embeddings) into the controller's input."""


@dataclass
class SearchConfig:
    """The ``search`` config group: algorithm, evolution sizes, constraints, targets, outputs."""

    algorithm: str = "ga"
    """A registered strategy (``metaprune.search.strategies``): ``ga`` (the paper's constrained
    evolution), ``nsga2`` (Pareto front, DEAP NSGA-II), ``random`` (random search, the GA's
    budget) or ``rl`` (an LSTM controller trained by REINFORCE)."""
    population: int = 50
    """Candidates per generation."""
    generations: int = 20
    """Generations per search (the first one is drawn at random)."""
    parents: int = 10
    """``ga``: the top-k candidates seen so far that parent the next generation."""
    mutation_children: int = 25
    """Children made by mutating one parent."""
    mutation_prob: float = 0.1
    """Per-gene probability that mutation redraws the gene's width choice."""
    crossover_children: int = 25
    """Children made by uniform crossover of two parents; the population is filled at random."""
    max_redraws: int = 200
    """Draws tried per candidate slot before giving up on a constraint-satisfying, unseen one."""
    seed: int = 0
    """Seed of the search's random numbers (a search is deterministic given it)."""
    constraints: dict[str, Any] = field(default_factory=dict)
    """``{cost: bound or [lower, upper]}`` for cost in flops, params, latency.  Fractions of the
    max config: '50%' or '0.5x' (any cost), a bare number <= 1 (flops, params only); absolute:
    '300M', '1.2G', 3e8 (flops, params), '2.5ms' (latency needs its unit)."""
    targets: list[Any] = field(default_factory=list)
    """Bounds on the primary ``cost`` (same rule; each may be a [lower, upper] pair): one winner
    per target, all from one PruningNet and one shared score cache."""
    cost: str = "flops"
    """Primary cost: the one ``targets`` bound and the x axis of the plot."""
    objectives: list[str] = field(default_factory=lambda: ["flops"])
    """``nsga2``: costs minimised beside the maximised accuracy."""
    baseline_ratios: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    """Uniform-width baselines scored by the same proxy (the nearest choice of the space)."""
    resume: bool = False
    """Continue the search checkpointed in the output directory (or return it when finished);
    refused, naming the keys, when its identity (settings, PruningNet, data) changed."""
    latency_table: str | None = None
    """Path of a latency table (``metaprune.cost.latency``) enabling the ``latency`` cost."""
    tensorboard: bool = True
    """Write TensorBoard scalars (best, mean, front size) per generation."""
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    """Settings of the proxy scorer."""
    rl: RLConfig = field(default_factory=RLConfig)
    """``rl``: the controller's settings."""
    surrogate: str | None = None
    """``ga``: a registered surrogate (``ridge``) that ranks a pool of children so only the
    most promising are scored (``strategies/surrogate.py``); null = the paper's GA."""
    surrogate_pool: int = 4
    """With a surrogate: a generation after the first draws this many times ``population``
    children (each meeting the bounds, none seen before) for the surrogate to rank."""
    surrogate_scored: int | None = None
    """With a surrogate: the pool's top candidates by prediction scored per generation after
    the first (null = ``population``); generation 0 scores ``population`` random candidates."""

    def validate(self) -> SearchConfig:
        """Check value ranges; raises ``ValueError`` naming the bad field."""
        from metaprune.search.strategies import strategy_class

        strategy_class(self.algorithm)  # an unknown name fails here, listing the registered ones
        for name in ("population", "generations", "parents", "max_redraws"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mutation_children", "crossover_children"):
            if getattr(self, name) < 0:
                raise ValueError(f"search.{name} must be >= 0, got {getattr(self, name)}")
        if self.mutation_children + self.crossover_children > self.population:
            raise ValueError(
                f"search.mutation_children + crossover_children = "
                f"{self.mutation_children + self.crossover_children} exceeds the population "
                f"{self.population}"
            )
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(f"search.mutation_prob must be in [0, 1], got {self.mutation_prob}")
        if self.cost not in COSTS:
            raise ValueError(f"search.cost={self.cost!r}; choose one of {COSTS}")
        bad = [o for o in self.objectives if o not in COSTS]
        if bad or not self.objectives:
            raise ValueError(f"search.objectives={self.objectives}; choose among {COSTS}")
        for i, target in enumerate(self.targets):
            check_bound_syntax(self.cost, target, f"search.targets[{i}]={target!r}")
        for name, spec in self.constraints.items():
            check_bound_syntax(name, spec, f"search.constraints.{name}={spec!r}")
        self._validate_strategy_options()
        s = self.scorer
        s.precision()  # a bad amp fails here, naming it
        if s.resident_mb < 0:
            raise ValueError(f"search.scorer.resident_mb must be >= 0, got {s.resident_mb}")
        for name in ("racing_slice", "racing_recalib"):
            if not 0.0 < getattr(s, name) <= 1.0:
                raise ValueError(f"search.scorer.{name} must be in (0, 1], got {getattr(s, name)}")
        for name in (
            "recalib_batches",
            "recalib_batch_size",
            "eval_batch_size",
            "racing_top_k",
            "stack",
        ):
            if getattr(s, name) is not None and getattr(s, name) < 1:
                raise ValueError(f"search.scorer.{name} must be >= 1, got {getattr(s, name)}")
        return self

    def _validate_strategy_options(self) -> None:
        from metaprune.search.strategies.surrogate import SURROGATES

        r = self.rl
        if not r.lr > 0.0:
            raise ValueError(f"search.rl.lr must be > 0, got {r.lr}")
        if r.entropy_weight < 0.0:
            raise ValueError(f"search.rl.entropy_weight must be >= 0, got {r.entropy_weight}")
        if not 0.0 <= r.baseline_decay < 1.0:
            raise ValueError(f"search.rl.baseline_decay must be in [0, 1), got {r.baseline_decay}")
        if r.hidden < 1:
            raise ValueError(f"search.rl.hidden must be >= 1, got {r.hidden}")
        if self.surrogate is None:
            return
        if self.surrogate not in SURROGATES:
            raise ValueError(
                f"search.surrogate={self.surrogate!r}; choose one of {sorted(SURROGATES)} or null"
            )
        if self.algorithm != "ga":
            raise ValueError(
                f"search.surrogate works with search.algorithm=ga, got {self.algorithm!r}"
            )
        if self.surrogate_pool < 1:
            raise ValueError(f"search.surrogate_pool must be >= 1, got {self.surrogate_pool}")
        n = self.surrogate_scored
        if n is not None and not 1 <= n <= self.population * self.surrogate_pool:
            raise ValueError(
                f"search.surrogate_scored must be in [1, population x surrogate_pool = "
                f"{self.population * self.surrogate_pool}], got {n}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values.  The options of :data:`LATER_OPTIONS` are left out
        while at their defaults, so the identity of a search (and of a benchmark step) made
        before they existed is unchanged; left out, they read back as their defaults."""
        d = asdict(self)
        default = asdict(SearchConfig())
        for name in LATER_OPTIONS:
            if d[name] == default[name]:
                del d[name]
        return d

    @classmethod
    def from_any(cls, cfg: SearchConfig | Mapping[str, Any] | DictConfig | None) -> SearchConfig:
        """A validated config from a dataclass, a dict or an OmegaConf node (unknown keys fail)."""
        return to_dataclass(cls, cfg, "search")
