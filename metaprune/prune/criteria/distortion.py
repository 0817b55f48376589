"""``distortion``: channels ranked by the distortion of the network's output their removal
causes (the rate-distortion view of pruning: Gao et al., "Rate Distortion For Model Compression:
From Theory To Practice", ICML 2019, sec. 5).

The distortion of removing channel ``c`` is the mean squared change of the logits,
``D_c = E_x ||f(x) - f_{-c}(x)||^2``, on ``batches`` calibration batches in eval mode.  How it is
approximated: ``mode=linear`` (default) linearises the network in the channel's mask ``m`` (1 -> 0),
``f_{-c}(x) ~ f(x) - df/dm_c``, so ``D_c ~ E_x sum_k (df_k(x) / dm_c)^2``: one backward pass a
class for every channel at once (per-sample masks), or with ``probes`` its unbiased estimate
from that many random Gaussian projections of the logits (for many classes); ``mode=exact`` removes each channel in turn
(one forward pass a channel, for small networks).  Coupled channels share the mask.  Distortions
of channels removed together are taken as additive (the paper's assumption), and global allocation
minimises distortion per unit of rate, the FLOPs saved (``normalise``).  Departure: the paper
uses a second-order expansion with Hessian-free terms; the first-order term here is the squared
Jacobian-mask product.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from metaprune.prune.channels import Scores, gene_masks
from metaprune.prune.criteria.fisher import mask_gradients
from metaprune.prune.criterion import NORMALISERS, Batches, Criterion, register_criterion
from metaprune.space import ChannelSpace

MODES = ("linear", "exact")


@register_criterion
class Distortion(Criterion):
    name = "distortion"
    normalise = "flops"

    def __init__(
        self, batches: int = 4, mode: str = "linear", normalise: str = "flops", probes: int = 0
    ) -> None:
        if batches < 1 or mode not in MODES or normalise not in NORMALISERS[1:] or probes < 0:
            raise ValueError(
                f"needs batches >= 1, mode in {MODES}, normalise in {NORMALISERS[1:]} and "
                f"probes >= 0, got {batches}, {mode!r}, {normalise!r}, {probes}"
            )
        self.batches, self.mode, self.normalise = int(batches), mode, normalise
        self.probes = int(probes)
        self._rng = torch.Generator().manual_seed(0)

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        model.eval()
        total = {g.name: torch.zeros(g.max_channels, dtype=torch.float64) for g in space.genes}
        n = 0
        measure = self._linear if self.mode == "linear" else self._exact
        for x, _ in itertools.islice(batches, self.batches):
            for g, d in measure(model, space, x).items():
                total[g] += d
            n += len(x)
        return {g: (t / n).float() for g, t in total.items()}

    def _linear(
        self, model: nn.Module, space: ChannelSpace, x: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Summed over the batch: ``sum_k (df_k / dm_c)^2`` for every channel; with ``probes``,
        its unbiased estimate ``mean_p (v_p . df / dm_c)^2`` over Gaussian probes ``v_p``
        (``probes`` backward passes instead of one a class)."""
        shape = (len(x), space.num_classes)
        probes = [torch.randn(shape, generator=self._rng).to(x.device) for _ in range(self.probes)]

        def outputs(z: torch.Tensor) -> list[torch.Tensor]:
            return [(z * v).sum() for v in probes] if probes else list(z.sum(0))

        scale = 1.0 / self.probes if self.probes else 1.0
        grads = mask_gradients(model, space, x, outputs)
        return {
            g: scale * sum(gr[g].detach().double().pow(2).sum(0).cpu() for gr in grads)
            for g in grads[0]
        }

    @staticmethod
    def _exact(model: nn.Module, space: ChannelSpace, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed over the batch: ``||f(x) - f_{-c}(x)||^2`` with channel ``c`` removed."""
        out = {}
        with torch.no_grad():
            ref = model(x).double()
            for g in space.genes:
                d = torch.zeros(g.max_channels, dtype=torch.float64)
                for c in range(g.max_channels):
                    mask = torch.ones(g.max_channels, device=x.device)
                    mask[c] = 0.0
                    with gene_masks(model, space, {g.name: mask}):
                        d[c] = (model(x).double() - ref).pow(2).sum().cpu()
                out[g.name] = d
        return out
