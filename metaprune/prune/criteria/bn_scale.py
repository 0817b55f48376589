"""``bn_scale``: the |gamma| of each channel's BN, optionally after sparsity training (network
slimming: Liu et al., "Learning Efficient Convolutional Networks through Network Slimming",
ICCV 2017, sec. 3.1-3.3).

The BN scaling factor gamma multiplies a channel's normalised output, so a small |gamma| marks a
channel that contributes little.  With ``sparsity`` > 0 the network first trains ``steps`` SGD
steps with ``sparsity * sum |gamma|`` added to the loss (the paper's L1 penalty, by
subgradient), which pushes the unimportant gammas towards zero; the trained weights are the ones
pruned.  A channel with several producers (coupled channels) scores the mean |gamma| over them.
Widths are allocated by one global threshold on the scores, as in the paper.  Departure: the paper
sparsity-trains for the whole schedule (here a few steps, ``steps``, from a trained network).
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.prune.channels import Scores, conv_bn, producers
from metaprune.prune.criterion import Batches, Criterion, register_criterion
from metaprune.prune.training import train_steps
from metaprune.space import ChannelSpace


@register_criterion
class BNScale(Criterion):
    name = "bn_scale"
    normalise = None

    def __init__(self, sparsity: float = 0.0, steps: int = 100, lr: float = 0.01) -> None:
        if sparsity < 0:
            raise ValueError(f"sparsity must be >= 0, got {sparsity}")
        self.sparsity, self.steps, self.lr = float(sparsity), int(steps), float(lr)

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        prods = producers(space)
        bns = [conv_bn(model, ly)[1] for layers in prods.values() for ly in layers]
        if self.sparsity > 0:

            def penalty() -> torch.Tensor:
                return self.sparsity * sum(bn.weight.abs().sum() for bn in bns)

            train_steps(model, batches, self.steps, self.lr, penalty=penalty)
        return {
            gene: torch.stack([conv_bn(model, ly)[1].weight.detach().abs() for ly in layers]).mean(
                0
            )
            for gene, layers in prods.items()
        }
