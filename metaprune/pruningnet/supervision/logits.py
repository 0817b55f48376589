"""In-place distillation (``train.distill_mode=logits``; Yu & Huang, "Universally slimmable
networks", ICCV 2019, sec. 3.3, on a MetaPruning PruningNet, Liu et al., ICCV 2019).

The max-width network is trained on the labels; each sampled network's loss is
``(1 - w) * CE(labels) + w * T^2 * KL(softmax(full / T) || softmax(sub / T))`` with the full
network's logits detached (``train.distill_weight`` ``w``, ``train.distill_temperature`` ``T``;
the loss of :func:`metaprune.retrain.distill.kd_loss`).  Departure: the slimmable networks'
in-place distillation uses the soft targets alone (``w = 1``, ``T = 1``); here both are options
(default ``w = 0.5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaprune.engine.trainer import LossFn, TrainConfig
from metaprune.pruningnet.supervision import register_supervision
from metaprune.space import ChannelConfig, ChannelSpace


@register_supervision("logits")
class InPlaceDistillation:
    """The full network on the labels, each sampled one also on its detached soft targets."""

    def __init__(self, space: ChannelSpace, tcfg: TrainConfig) -> None:
        self.full = space.max()
        self.weight, self.temperature = tcfg.distill_weight, tcfg.distill_temperature

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        configs: Sequence[ChannelConfig],
        loss_fn: LossFn,
    ) -> list[torch.Tensor]:
        # imported here: metaprune.retrain imports the PruningNet package that imports this one
        from metaprune.retrain.distill import kd_loss

        logits = model(x, self.full)
        target = logits.detach()
        sub = [
            kd_loss(model(x, c), target, y, loss_fn, self.temperature, self.weight) for c in configs
        ]
        return [loss_fn(logits, y), *sub]
