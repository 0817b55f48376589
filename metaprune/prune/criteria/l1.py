"""``l1``: the L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017, sec. 3.1).

A channel's score is the sum of absolute weights of the filter that produces it.  A gene with
several producers (a residual stage's convs, a depthwise conv and its expand conv) scores a
channel by the mean over producers of the filter's norm divided by that producer's mean filter
norm, so every gene's scores are on one scale (mean 1) and rank across genes by a global
threshold.  Departure: the paper prunes layer by layer, with a pruning ratio per layer from a
sensitivity analysis, and does not rank across layers.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.prune.channels import Scores, conv_bn, producers
from metaprune.prune.criterion import Batches, Criterion, register_criterion
from metaprune.space import ChannelSpace


@register_criterion
class L1(Criterion):
    name = "l1"
    normalise = None

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        out = {}
        for gene, layers in producers(space).items():
            norms = []
            for layer in layers:
                w = conv_bn(model, layer)[0].weight.detach().double()
                n = w.abs().flatten(1).sum(1)
                norms.append(n / n.mean().clamp_min(1e-12))
            out[gene] = torch.stack(norms).mean(0).float()
        return out
