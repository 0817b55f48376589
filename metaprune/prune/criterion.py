"""The :class:`Criterion` interface and the registry of channel-importance criteria.

A criterion scores every channel of every gene of a trained full-width network (coupled channels
as one group: :mod:`.channels`) and says how the scores rank across genes when widths are
allocated globally (:mod:`.allocate`): by the score of the least important channels removed
(``normalise = None``: a global threshold, as network slimming's), or by the removed channels'
summed importance per unit of cost saved (``normalise = "flops" | "params" | "memory"``, as
group Fisher pruning's memory normalisation).  A criterion may change the network first (the
sparsity-training ones) and may change the kept weights after (:meth:`Criterion.transfer`, LRF's
weights compensation).  A criterion may also find residual blocks dead
(:meth:`Criterion.dead_blocks`, SSS's zero block factors), which a space with depth genes
removes.  One criterion a file under :mod:`metaprune.prune.criteria`, registered with
:func:`register_criterion`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from metaprune.prune.channels import Keep, Scores, prune_state
from metaprune.space import ChannelSpace

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
"""An endless stream of training batches ``(x, y)`` on the network's device."""

NORMALISERS = (None, "flops", "params", "memory")


class CriterionError(ValueError):
    """An unknown criterion or criterion option, or an option out of range."""


class Criterion:
    """Scores channels of a trained network; subclasses set ``name`` and implement :meth:`score`.

    Options are the subclass's keyword arguments (``prune.options``)."""

    name: ClassVar[str] = ""
    normalise: ClassVar[str | None] = None
    """How global allocation ranks channels across genes (module docstring)."""

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        """Importance of every channel of every gene (higher = keep); may train ``model``."""
        raise NotImplementedError

    def dead_blocks(self) -> set[int]:
        """Indices of the residual blocks whose body the last :meth:`score` found dead (its
        output zero, so removing it changes nothing); on a space with depth genes the prune
        switches the removable ones off.  None unless a criterion selects blocks."""
        return set()

    def transfer(
        self, model: nn.Module, space: ChannelSpace, keep: Keep, batches: Batches
    ) -> dict[str, torch.Tensor]:
        """The pruned network's state dict: the kept channels' weights of ``model``."""
        return prune_state(space, model.state_dict(), keep)


_CRITERIA: dict[str, type[Criterion]] = {}


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator adding a criterion to the registry under ``cls.name``."""
    if not cls.name or cls.name in _CRITERIA:
        raise ValueError(f"criterion name {cls.name!r} is empty or already registered")
    if cls.normalise not in NORMALISERS:
        raise ValueError(f"criterion {cls.name}: normalise must be one of {NORMALISERS}")
    _CRITERIA[cls.name] = cls
    return cls


def list_criteria() -> list[str]:
    """Names of the registered criteria."""
    return sorted(_CRITERIA)


def make_criterion(name: str, options: Mapping[str, Any] | None = None) -> Criterion:
    """The criterion ``name`` with ``options``; an unknown name or option is a
    :class:`CriterionError` naming what exists."""
    if name not in _CRITERIA:
        raise CriterionError(
            f"prune.criterion={name!r} is unknown; choose one of {list_criteria()}"
        )
    cls: Callable[..., Criterion] = _CRITERIA[name]
    params = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(options or {}) - set(params))
    if unknown:
        raise CriterionError(
            f"prune.options {unknown} unknown for criterion {name!r}; it takes {params}"
        )
    try:
        return cls(**dict(options or {}))
    except (TypeError, ValueError) as e:
        raise CriterionError(f"prune.options for criterion {name!r}: {e}") from e
