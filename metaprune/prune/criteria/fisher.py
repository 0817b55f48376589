"""``fisher``: group Fisher importance of coupled channels (Liu et al., "Group Fisher Pruning for
Practical Network Compression", ICML 2021, sec. 3.2-3.3).

Each channel gets a mask ``m = 1`` multiplying its output; removing it sets ``m = 0``, and the
second-order change of the loss, with the Fisher information for the Hessian, is
``s = 1 / (2N) * sum_n (dL_n / dm)^2`` over ``N`` samples.  Coupled channels (a residual stage's
outputs, a depthwise conv and its input) share one mask, so the gradient sums over every layer
of the group: the paper's group Fisher.  Per-sample gradients come from one mask a sample
(``gene_masks`` with ``(N, C)`` masks), on ``batches`` training batches in eval mode (BN with its
running statistics).  Global allocation normalises the summed importance removed by the cost it
saves: ``memory`` (the paper: feature-map memory), or ``flops`` / ``params``.  Departure: the
paper prunes one channel at a time and fine-tunes between; here it is done once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.prune.channels import Scores, gene_masks
from metaprune.prune.criterion import NORMALISERS, Batches, Criterion, register_criterion
from metaprune.space import ChannelSpace


def mask_gradients(
    model: nn.Module,
    space: ChannelSpace,
    x: torch.Tensor,
    outputs: Callable[[torch.Tensor], Sequence[torch.Tensor]],
) -> list[dict[str, torch.Tensor]]:
    """Per-sample gradients ``(N, C)`` of each scalar ``outputs(logits)`` returns with respect
    to every gene's channel masks (all ones): one dict a scalar."""
    masks = {
        g.name: torch.ones(len(x), g.max_channels, device=x.device, requires_grad=True)
        for g in space.genes
    }
    with gene_masks(model, space, masks):
        logits = model(x)
    targets = outputs(logits)
    out = []
    for i, t in enumerate(targets):
        grads = torch.autograd.grad(t, list(masks.values()), retain_graph=i < len(targets) - 1)
        out.append(dict(zip(masks, grads, strict=True)))
    return out


@register_criterion
class Fisher(Criterion):
    name = "fisher"
    normalise = "memory"

    def __init__(self, batches: int = 8, normalise: str = "memory") -> None:
        if batches < 1 or normalise not in NORMALISERS[1:]:
            raise ValueError(
                f"needs batches >= 1 and normalise in {NORMALISERS[1:]}, got {batches}, "
                f"{normalise!r}"
            )
        self.batches, self.normalise = int(batches), normalise

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        model.eval()
        total = {g.name: torch.zeros(g.max_channels, dtype=torch.float64) for g in space.genes}
        n = 0
        for x, y in itertools.islice(batches, self.batches):
            (grads,) = mask_gradients(
                model, space, x, lambda z, y=y: [F.cross_entropy(z, y, reduction="sum")]
            )
            for g, gr in grads.items():
                total[g] += gr.detach().double().pow(2).sum(0).cpu()
            n += len(x)
        return {g: (t / (2 * n)).float() for g, t in total.items()}
