"""The ``retrain`` config group: which channel config to retrain, how, and what to report.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3-4) retrains the searched network from scratch with
the recipe of the full network.  :class:`RetrainConfig` names the config (a file, a search's
winner, or a uniform width), the initialisation, the recipe overrides of the shared ``train`` /
``optim`` / ``sched`` groups, and the report (export formats, latency measurement).

Beyond the paper: ``init=inherit`` (start from the PruningNet's generated weights) and
knowledge distillation (:class:`KDConfig`, see :mod:`metaprune.retrain.distill`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from metaprune.engine import OptimConfig, SchedConfig, TrainConfig
from metaprune.export import FORMATS
from metaprune.groups import to_dataclass, to_plain

INITS = ("scratch", "inherit")


@dataclass
class KDConfig:
    """Knowledge distillation (config group ``retrain.kd``)."""

    teacher: str | None = None
    """A pruned network saved by ``export_model``/``retrain`` (``pruned.pt`` or its export
    directory), loaded with ``load_pruned``; null = no distillation."""
    temperature: float = 4.0
    """Softmax temperature T of teacher and student (the KL term is scaled by T^2)."""
    weight: float = 0.9
    """Weight w of the KL term; the cross-entropy with the labels gets 1 - w."""


@dataclass
class RetrainConfig:
    """The ``retrain`` config group: which config to retrain, how, and what to report."""

    from_search: str | None = None
    """A finished search run directory whose winner to retrain (with ``target``)."""
    target: Any = None
    """Which winner of ``from_search``: a target as written in ``search.targets`` (e.g. 0.5,
    '300M'); one that is not a search target is answered from the search's scored table as the
    best config under that bound on ``search.cost``.  Null = the search's only winner."""
    config: str | None = None
    """A JSON file with a ChannelConfig (``to_json()``, a ``winners.json`` entry or a
    ``model.json``)."""
    uniform: float | None = None
    """Retrain the uniform-width baseline at this ratio (the nearest choice of the space)."""
    init: str = "scratch"
    """``scratch`` (the paper: random initialisation) or ``inherit`` (the PruningNet's generated
    weights for the config, then fine-tuning)."""
    pruningnet: str | None = None
    """PruningNet checkpoint or training run directory; needed for ``init=inherit``."""
    kd: KDConfig = field(default_factory=KDConfig)
    """Knowledge distillation from a teacher network."""
    epochs: int | None = None
    """Retraining epochs; null = ``train.epochs`` (or ``retrain.train.epochs``)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``train`` group for retraining (e.g. ``{batch_size: 256}``)."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``optim`` group for retraining (e.g. ``{lr: 0.05}``)."""
    sched: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``sched`` group for retraining."""
    export: bool = True
    """Export the retrained network to ``export/`` (``pruned.pt`` and ``model.json`` are always
    written there)."""
    export_formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Programs to export: ``torchscript``, ``export`` (``torch.export``), ``onnx``."""
    onnx_exporter: str = "torchscript"
    """``torchscript`` (fast) or ``dynamo`` (``torch.export``-based) ONNX exporter."""
    latency_repeats: int = 30
    """Timed calls per round when measuring latency (5 rounds, median); 0 = do not measure."""
    latency_threads: int = 1
    """CPU threads while measuring latency."""

    def validate(self) -> RetrainConfig:
        """Check value ranges; raises ``ValueError`` naming the bad field."""
        if self.init not in INITS:
            raise ValueError(f"retrain.init={self.init!r}; choose one of {list(INITS)}")
        if self.init == "inherit" and not self.pruningnet:
            raise ValueError("retrain.init=inherit needs retrain.pruningnet (a PruningNet path)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"retrain.epochs must be >= 1, got {self.epochs}")
        if not self.kd.temperature > 0 or not 0.0 <= self.kd.weight <= 1.0:
            raise ValueError(
                f"retrain.kd needs temperature > 0 and weight in [0, 1], got "
                f"{self.kd.temperature}, {self.kd.weight}"
            )
        bad = sorted(set(self.export_formats) - set(FORMATS))
        if bad:
            raise ValueError(f"retrain.export_formats {bad} unknown; choose from {list(FORMATS)}")
        if self.latency_repeats < 0 or self.latency_threads < 1:
            raise ValueError("retrain.latency_repeats must be >= 0 and latency_threads >= 1")
        return self

    @classmethod
    def from_any(cls, group: Any) -> RetrainConfig:
        """A validated config from itself, a mapping or an OmegaConf node (unknown keys fail)."""
        return to_dataclass(cls, group, "retrain")


def recipe(cfg: Any, rcfg: RetrainConfig) -> tuple[TrainConfig, OptimConfig, SchedConfig]:
    """The ``train``, ``optim`` and ``sched`` groups of the run ``cfg`` with the overrides of
    ``rcfg`` (``retrain.train`` / ``optim`` / ``sched``, then ``retrain.epochs``) applied: what a
    retrain trains with, checked; a bad key or value is an error naming ``retrain.<group>``."""

    def merged(name: str) -> dict[str, Any]:
        return {**to_plain(cfg.get(name)), **getattr(rcfg, name)}

    train = to_dataclass(TrainConfig, merged("train"), "retrain.train")
    return (
        train if rcfg.epochs is None else replace(train, epochs=rcfg.epochs),
        to_dataclass(OptimConfig, merged("optim"), "retrain.optim"),
        to_dataclass(SchedConfig, merged("sched"), "retrain.sched"),
    )
