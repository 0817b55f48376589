"""The structured schema of the whole run configuration, registered with Hydra.

Every config group is backed by the dataclass of the module that uses it, so a misspelt key or a
wrong type fails when the configuration is composed, before any work starts (DESIGN.md:
"config groups named like the code").  Hydra types the groups it composes; :func:`check_config`
(run by :func:`load_config` and by every ``metaprune`` command before its stage starts) also
range-checks each of them, builds the model's space, and checks the keys Hydra cannot type:
``retrain.train`` / ``retrain.optim`` / ``retrain.sched`` overrides, merged onto their groups as
retraining will merge them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from metaprune.config import build_space, supernet_path
from metaprune.data import DataConfig
from metaprune.engine import OptimConfig, SchedConfig, TrainConfig
from metaprune.groups import ConfigError, to_dataclass, to_plain
from metaprune.prune.config import DEFAULTS as PRUNE_DEFAULTS
from metaprune.prune.config import PruneConfig
from metaprune.pruningnet import PruningNetConfig
from metaprune.pruningnet.supervision import check_supervision
from metaprune.retrain import RetrainConfig
from metaprune.retrain import recipe as retrain_recipe
from metaprune.search.config import SearchConfig

CONF_DIR = Path(__file__).parent / "conf"
"""The packaged ``conf/`` tree."""


@dataclass
class ModelConfig:
    """The ``model`` group: a registered family and its options (see ``metaprune.list_models()``)."""

    name: str = "mobilenet_v2"
    """Model family."""
    stem: str = "cifar"
    """``cifar`` (stride-1 stem for 32x32 / 28x28 inputs) or ``imagenet``."""
    width_mult: float = 1.0
    """Scales every maximum width (for small models)."""
    in_chans: int | None = None
    """Input channels; null = from the data."""
    input_size: int | None = None
    """Input side; null = from the data."""
    num_classes: int | None = None
    """Classes; null = from the data."""


@dataclass
class SpaceConfig:
    """The ``space`` group: the width choices (ratios of each gene's maximum)."""

    choices: list[float] | None = None
    """Width ratios; null = the paper's 31 ratios 0.10, 0.13, ..., 1.00."""
    depth: bool = False
    """Add an on/off depth gene per removable residual block (identity shortcut), which
    ``prune.criterion=sss`` switches off when the block's factor reaches zero; the PruningNet
    and the search handle width genes only and refuse such a space."""


@dataclass
class PipelineConfig:
    """The ``pipeline`` group: what ``metaprune pipeline`` runs after train and search."""

    retrain_winners: bool = True
    """Retrain the winner of every search target from scratch."""
    baselines: bool = True
    """Also retrain each winner's matched-cost uniform-width baseline: the uniform config of
    the smallest FLOPs at or above the winner's (``uniform_baseline(..., match=...)``)."""
    seeds: int = 1
    """Retrain every winner and baseline with this many seeds (``train.seed``, +1, ...); the
    summary gives their mean and spread."""
    workers: int = 1
    """Retrains run side by side in this many processes (one per core; 1 = in this process)."""

    def validate(self) -> PipelineConfig:
        """Check value ranges; raises ``ValueError`` naming the bad field."""
        for name in ("seeds", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"pipeline.{name} must be >= 1, got {getattr(self, name)}")
        return self


@dataclass
class AppConfig:
    """The whole configuration of a run (``conf/config.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pruningnet: PruningNetConfig = field(default_factory=PruningNetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    prune: dict[str, Any] = field(default_factory=lambda: dict(PRUNE_DEFAULTS))
    """The ``prune`` block of ``metaprune prune`` (:class:`~metaprune.prune.PruneConfig`; a
    mapping, as its key ``from`` is no Python name: checked by :func:`check_config`)."""
    run_name: str = "run"
    """Name of the run directory under ``outputs/``."""
    run_dir: str = "outputs/${run_name}"
    """Where every stage writes (``train/``, ``search/``, ``retrain/<label>/``)."""
    supernet: str | None = None
    """Trained PruningNet (checkpoint or train directory) for search; null = ``run_dir/train``."""


def register_configs() -> None:
    """Register the schema as ``schema`` in Hydra's ConfigStore (``conf/config.yaml`` uses it)."""
    ConfigStore.instance().store(name="schema", node=AppConfig)


_GROUPS = {
    "data": DataConfig,
    "pruningnet": PruningNetConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
    "search": SearchConfig,
    "pipeline": PipelineConfig,
}


def check_config(cfg: DictConfig) -> None:
    """Type- and range-check every group of a composed run configuration, before any stage
    runs: an unknown key, a wrong type or a value out of range raises an error naming the key
    (``retrain.train.epohcs``, ``search.population``, ``model: unknown model family``)."""
    groups = {name: to_dataclass(schema, cfg.get(name), name) for name, schema in _GROUPS.items()}
    _check_latency_table(groups["search"])
    try:
        check_supervision(groups["train"])  # the registry lives beside the PruningNet
    except ValueError as e:
        raise ConfigError(str(e)) from e
    to_dataclass(ModelConfig, cfg.get("model"), "model")
    to_dataclass(SpaceConfig, cfg.get("space"), "space")
    try:
        build_space(cfg.model, cfg.get("space"))  # family, options, choices (data dims later)
    except ValueError as e:
        raise ConfigError(f"model / space: {e}") from e
    retrain = to_plain(cfg.get("retrain"))
    # init=inherit uses the run's PruningNet unless told: the default the commands fill in
    retrain["pruningnet"] = retrain.get("pruningnet") or supernet_path(cfg, cfg.run_dir)
    rcfg = to_dataclass(RetrainConfig, retrain, "retrain")
    retrain_recipe(cfg, rcfg)  # the overrides merged onto their groups, as retraining does
    PruneConfig.from_any(cfg.get("prune"))


def _check_latency_table(scfg: SearchConfig) -> None:
    """A search that bounds or optimises latency needs its table (the commands build the latency
    cost from ``search.latency_table``); without one it would fail only when the search starts."""
    used = set(scfg.constraints) | {scfg.cost}  # the primary cost: targets, results and plot
    used |= set(scfg.objectives) if scfg.algorithm == "nsga2" else set()
    if "latency" in used and not scfg.latency_table:
        raise ConfigError(
            "search: a latency constraint, target or objective needs search.latency_table "
            "(build one with `metaprune latency build`)"
        )


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed and checked (:func:`check_config`) configuration with Hydra overrides, for
    notebooks and tests (no run dir)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    check_config(cfg)
    return cfg
