"""Full-net supervision of PruningNet training (``train.distill=fullnet``).

Beyond MetaPruning (Liu et al., ICCV 2019, sec. 3.2), which trains every sampled network on the
labels alone: each step also runs the max-width network through the same PruningNet on the same
batch, trains it on the labels, and lets it supervise the sampled networks.  The stage-wise
pruning paper (this project's ``papers/002``, second abstract) finds that supervising sub-nets by
the full net brings their proxy accuracy closer to their stand-alone accuracy.  A registry
(``train.distill_mode``), one file a member:

* ``logits`` (:mod:`.logits`): in-place distillation from the full network's soft targets;
* ``stagewise`` (:mod:`.stagewise`): each stage of a sampled network reproduces the full
  network's stage output from the full network's stage input.

A supervision maps ``(model, x, y, configs, loss_fn)`` to one loss per network, the full
network's first; the step averages them (as the paper's step averages over its configs).  A
sampled config of the full network's widths is dropped: the full network is trained already.
The search scores configs with the plain, supervision-free forward either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from metaprune.engine.trainer import LossFn, StepFn, TrainConfig
from metaprune.pruningnet.sampler import ConfigSampler
from metaprune.space import ChannelConfig, ChannelSpace


class Supervision(Protocol):
    """One step's losses: the full network's on the labels, then one per sampled config."""

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        configs: Sequence[ChannelConfig],
        loss_fn: LossFn,
    ) -> list[torch.Tensor]: ...


SupervisionFactory = Callable[[ChannelSpace, TrainConfig], Supervision]
SUPERVISIONS: dict[str, SupervisionFactory] = {}
"""``train.distill_mode`` -> ``factory(space, train_config)``."""


def register_supervision(name: str) -> Callable[[SupervisionFactory], SupervisionFactory]:
    """Class decorator adding a supervision to :data:`SUPERVISIONS`."""

    def add(factory: SupervisionFactory) -> SupervisionFactory:
        SUPERVISIONS[name] = factory
        return factory

    return add


def check_supervision(tcfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming ``train.distill_mode`` when it names no supervision."""
    if tcfg.distill_mode not in SUPERVISIONS:
        raise ValueError(
            f"unknown train.distill_mode {tcfg.distill_mode!r}; choose one of {list(SUPERVISIONS)}"
        )


def fullnet_step(sampler: ConfigSampler, tcfg: TrainConfig) -> StepFn:
    """The training step with full-net supervision ``tcfg.distill_mode``: the mean of the full
    network's loss and the supervised losses of the configs ``sampler`` draws."""
    check_supervision(tcfg)
    supervise = SUPERVISIONS[tcfg.distill_mode](sampler.space, tcfg)
    full = sampler.space.max().width_tuple()

    def step(model, x, y, rng, loss_fn):
        configs = [c for c in sampler.sample(rng) if c.width_tuple() != full]
        losses = supervise(model, x, y, configs, loss_fn)
        return sum(losses) / len(losses)

    return step


# the members register themselves on import
from metaprune.pruningnet.supervision import logits, stagewise  # noqa: E402, F401

__all__ = [
    "SUPERVISIONS",
    "Supervision",
    "check_supervision",
    "fullnet_step",
    "register_supervision",
]
