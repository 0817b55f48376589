"""The ``prune`` config block: which trained network to prune, by which criterion, to what size.

``prune.from`` is a retrain run directory (its ``export/pruned.pt``; ``metaprune retrain
retrain.uniform=1.0`` makes the full-width network), an export directory or ``pruned.pt``, or a
``.pt`` state dict of ``build_pruned(space, space.max())``.  Exactly one of ``prune.target``
(global allocation to a cost target on ``prune.cost``, read like the search's targets: ``0.5`` or
``'50%'`` of the full network, ``'300M'`` absolute, ``'2.5ms'`` for a latency) and ``prune.widths`` (a uniform width ratio,
or a JSON file holding a channel config such as a search winner) says how many channels each gene
keeps.  The key is ``from`` in the configuration and ``source`` here (``from`` is a Python
keyword); :data:`DEFAULTS` is the block as it appears in the composed configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from metaprune.groups import ConfigError, to_dataclass, to_plain
from metaprune.prune.criterion import make_criterion
from metaprune.search.constraints import parse_value

TARGET_COSTS = ("flops", "params", "latency")


@dataclass
class PruneConfig:
    """The ``prune`` block (``from`` is :attr:`source`)."""

    source: str | None = None
    """``prune.from``: the trained full-width network (module docstring)."""
    criterion: str = "l1"
    """A registered criterion (``metaprune.prune.list_criteria()``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The criterion's options (e.g. ``{batches: 8}`` for ``fisher``)."""
    target: Any = None
    """Allocate widths globally to this cost on ``cost`` (0.5, '50%', '300M')."""
    cost: str = "flops"
    """The cost ``target`` bounds: ``flops``, ``params`` or ``latency`` (with
    ``latency_table``; a target in ``ms`` or a share, '50%')."""
    latency_table: str | None = None
    """The latency table (``metaprune latency build``) a ``latency`` target is predicted with."""
    widths: Any = None
    """Keep the top channels at these widths: a ratio (every gene, nearest choice) or a JSON file
    with a channel config."""
    batch_size: int = 64
    """Batch size of the training batches criteria score (or sparsity-train) on."""
    recalib_batches: int = 0
    """Recompute the pruned network's BN statistics on this many clean training batches before
    fine-tuning (0: keep the copied ones)."""
    seed: int = 0
    """Seed of those batches' order and of criterion training."""
    kd: bool = False
    """Fine-tune with distillation from the unpruned network (``retrain.kd`` temperature and
    weight; ``retrain.kd.teacher``, when set, is used instead)."""

    def validate(self) -> PruneConfig:
        """Check the block; raises ``ValueError`` naming the bad key."""
        make_criterion(self.criterion, self.options)
        if self.target is not None and self.widths is not None:
            raise ConfigError("prune: set one of prune.target and prune.widths, not both")
        if self.cost not in TARGET_COSTS:
            raise ConfigError(f"prune.cost={self.cost!r}; choose one of {list(TARGET_COSTS)}")
        if self.cost == "latency" and not self.latency_table:
            raise ConfigError("prune.cost=latency needs prune.latency_table")
        if self.target is not None:
            parse_value(self.cost, self.target, 1.0, "prune.target")
        if isinstance(self.widths, float | int) and not 0 < float(self.widths) <= 1:
            raise ConfigError(f"prune.widths ratio must be in (0, 1], got {self.widths}")
        if self.batch_size < 1 or self.recalib_batches < 0:
            raise ConfigError(
                "prune.batch_size must be >= 1 and prune.recalib_batches >= 0, got "
                f"{self.batch_size}, {self.recalib_batches}"
            )
        return self

    def require_size(self) -> PruneConfig:
        """Raise unless ``prune.from`` and one of ``prune.target`` / ``prune.widths`` are set
        (what pruning needs; the defaults leave them unset)."""
        if self.source is None:
            raise ConfigError("prune.from is unset: name a retrain run directory or a .pt file")
        if self.target is None and self.widths is None:
            raise ConfigError("prune: set one of prune.target (a cost) and prune.widths")
        return self

    @classmethod
    def from_any(cls, block: Any) -> PruneConfig:
        """A validated config from the ``prune`` block of a run configuration (key ``from``)."""
        d = to_plain(block)
        if "source" in d:
            raise ConfigError("prune: unknown key 'source' (the trained network is prune.from)")
        if "from" in d:
            d["source"] = d.pop("from")
        return to_dataclass(cls, d, "prune")

    def block(self) -> dict[str, Any]:
        """This config as the ``prune`` block of a run configuration (key ``from``)."""
        d = asdict(self)
        return {"from": d.pop("source"), **d}


DEFAULTS: dict[str, Any] = PruneConfig().block()
