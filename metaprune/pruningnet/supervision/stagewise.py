"""Stage-wise full-net supervision (``train.distill_mode=stagewise``), after Stage-wise Pruning
(this project's ``papers/002``, second abstract) on a MetaPruning PruningNet (Liu et al., ICCV
2019, sec. 3.2).

The network is split into stages (:func:`stages`): the maximal runs of consecutive blocks of the
architecture whose outputs are the same channel dimension, i.e. the resolution stages whose
widths the residual shortcuts tie (CBM MobileNet: stem + blocks 1-2, blocks 3-4, the head conv;
ResNets: the stem with stage 1, then each stage; a family without tied outputs, such as
MobileNetV1, gets one stage per block).  Each step runs the max-width network stage by stage on
the batch, trained on the labels.  For each sampled network, stage ``s`` is fed the full
network's stage ``s - 1`` output (detached; the image for ``s = 0``) and trained to reproduce
the full network's stage ``s`` output (MSE); its head (pooling and the cropped classifier) is fed
the full network's last stage output and trained on the labels: loss ``(1 - w) * CE + w *
mean_s MSE_s`` (``train.distill_weight`` ``w``).  So each stage learns independently of the
widths elsewhere.

Width mismatch: a sampled stage takes and gives the sampled widths, the first channels of the
full network's (the meta blocks crop the first rows and columns of the full weights), so the full
network's features are cropped to the channels the sub-network keeps, on input and as the target;
zero-padding the sub-network's output instead would ask it to produce channels it does not have.

Departures from the paper, whose code is not public: the stages are the architecture's tied
resolution stages (the paper says "several stages" without a rule); the loss is the mean MSE of
the cropped features with the head on cross-entropy, mixed by one weight; the paper's full
network supervises the search too, but here configs are scored by the plain forward, BN
recalibrated, as without full-net supervision.  The sampled stages' BN rows gather their running
statistics from the full network's features; the search recalibrates them anyway.
:meth:`StagewiseSupervision.stage_losses` gives each stage's term, for tests and diagnostics.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.arch import Arch, resolve
from metaprune.engine.trainer import LossFn, TrainConfig
from metaprune.pruningnet.supervision import register_supervision
from metaprune.space import ChannelConfig, ChannelSpace


def stages(arch: Arch) -> list[range]:
    """The blocks of each stage: maximal runs of blocks whose outputs are one dimension."""
    outs = [block.body[-1].cout for block in arch.blocks]
    cuts = [i for i in range(1, len(outs)) if outs[i] != outs[i - 1]]
    bounds = [0, *cuts, len(outs)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def _crop(features: torch.Tensor, width: int) -> torch.Tensor:
    return features[:, :width]


@register_supervision("stagewise")
class StagewiseSupervision:
    """The full network on the labels, each sampled one stage by stage on its features."""

    def __init__(self, space: ChannelSpace, tcfg: TrainConfig) -> None:
        self.space = space
        self.full = space.max()
        self.weight = tcfg.distill_weight
        self.stages = stages(space.arch)
        self.head = range(len(space.arch.blocks), len(space.arch.blocks) + 1)

    def _out_width(self, stage: range, config: ChannelConfig) -> int:
        """The sampled width of ``stage``'s output."""
        return resolve(self.space.arch.blocks[stage[-1]].body[-1].cout, config.widths())

    def features(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """The full network's output of every stage on ``x``."""
        out = []
        for part in self.stages:
            x = model(x, self.full, part)
            out.append(x)
        return out

    def stage_losses(
        self,
        model: nn.Module,
        x: torch.Tensor,
        features: Sequence[torch.Tensor],
        config: ChannelConfig,
    ) -> list[torch.Tensor]:
        """Per stage, the MSE between ``config``'s stage fed the full network's previous stage
        output (``x`` for the first) and the full network's own output, both cropped to
        ``config``'s widths (``features``: detached full-network stage outputs)."""
        losses = []
        for s, part in enumerate(self.stages):
            inp = (
                x if s == 0 else _crop(features[s - 1], self._out_width(self.stages[s - 1], config))
            )
            out = model(inp, config, part)
            losses.append(F.mse_loss(out.float(), _crop(features[s], out.shape[1]).float()))
        return losses

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        configs: Sequence[ChannelConfig],
        loss_fn: LossFn,
    ) -> list[torch.Tensor]:
        features = self.features(model, x)
        full = loss_fn(model(features[-1], self.full, self.head), y)
        features = [f.detach() for f in features]
        out = [full]
        for c in configs:
            last = _crop(features[-1], self._out_width(self.stages[-1], c))
            head = loss_fn(model(last, c, self.head), y)
            losses = self.stage_losses(model, x, features, c)
            match = sum(losses) / len(losses)
            out.append((1.0 - self.weight) * head + self.weight * match)
        return out
