"""Objects built from the Hydra configuration (the ``conf/`` tree).

The configuration of a run has the groups ``model``, ``space``, ``data``, ``pruningnet``,
``optim``, ``sched``, ``train``, ``search``, ``retrain``, ``cost``; each is backed by a dataclass
schema so that a typo fails at start-up.  The functions here are what the Hydra entry points and a
notebook both call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from metaprune.models import create_space
from metaprune.space import ChannelSpace

T = TypeVar("T")


def _plain(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg or {})


def to_dataclass(schema: type[T], group: Any) -> T:
    """The dataclass ``schema`` filled from a config group (an instance of it, a ``DictConfig``, a
    mapping, or ``None`` for the defaults); unknown keys raise ``ValueError`` naming them."""
    if isinstance(group, schema):
        return group
    values = _plain(group)
    known = {f.name for f in fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {schema.__name__} field(s) {unknown}; known: {sorted(known)}")
    return schema(**values)


def build_space(
    model: Mapping[str, Any] | DictConfig,
    space: Mapping[str, Any] | DictConfig | None = None,
    data_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> ChannelSpace:
    """The channel space of a ``model`` config group (``name`` plus family options).

    ``in_chans``, ``input_size`` and ``num_classes`` left null in the config are taken from the
    data (``data_shape`` is (C, H, W)); ``space.choices`` replaces the paper's 31 ratios.
    """
    opts = _plain(model)
    name = opts.pop("name")
    if data_shape is not None:
        if opts.get("in_chans") is None:
            opts["in_chans"] = data_shape[0]
        if opts.get("input_size") is None:
            opts["input_size"] = data_shape[1]
    if opts.get("num_classes") is None and num_classes is not None:
        opts["num_classes"] = num_classes
    opts = {k: v for k, v in opts.items() if v is not None}
    choices = _plain(space).get("choices") if space is not None else None
    return create_space(name, choices=choices, **opts)


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


@dataclass
class PipelineConfig:
    """The ``pipeline`` group: what ``metaprune pipeline`` runs after train and search."""

    retrain_winners: bool = True
    """Retrain the winner of every search target from scratch."""
    baselines: bool = True
    """Also retrain the uniform-width config of the same FLOPs budget as each winner."""


def _schema() -> type:
    from metaprune.data import DataConfig
    from metaprune.engine import OptimConfig, SchedConfig, TrainConfig
    from metaprune.pruningnet import PruningNetConfig
    from metaprune.retrain import RetrainConfig
    from metaprune.search.config import SearchConfig

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
        run_name: str = "run"
        """Name of the run directory under ``outputs/``."""
        run_dir: str = "outputs/${run_name}"
        """Where every stage writes (``train/``, ``search/``, ``retrain/<label>/``)."""
        supernet: str | None = None
        """Trained PruningNet (checkpoint or train directory) for search; null = ``run_dir/train``."""

    return AppConfig


def register_configs() -> None:
    """Register the schema as ``schema`` in Hydra's ConfigStore (``conf/config.yaml`` uses it)."""
    ConfigStore.instance().store(name="schema", node=_schema())


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed configuration with Hydra overrides, for notebooks and tests (no run dir)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    register_configs()
    conf = Path(__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))
