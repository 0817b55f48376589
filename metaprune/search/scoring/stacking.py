"""Several candidates in one forward pass (beyond MetaPruning, Liu et al., ICCV 2019, sec. 3.3,
which scores one network at a time).

A *wave* of K candidates runs as one network (:class:`~metaprune.models.pruned.PrunedNet` with
``stack=K``: grouped convs, each member zero-padded to the wave's widest widths), so one kernel
launch serves K candidates.  Waves are formed in the order of the candidates' genes, so that a
wave's members are alike and little is padded (on the paper's GA stream of a ResNet-20, waves of
4 cost 1.46x their members' FLOPs against 1.70x in the order given; ``BENCHMARKS.md``).  A
member stopped by racing leaves the network: the others are re-assembled, re-padded to their
own widest.  One member is assembled as the plain network, without a copy.  Networks are built
on the meta device (no random initialisation) and their tensors loaded by assignment.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaprune.arch import Arch
from metaprune.engine.evaluate import fuse_bn
from metaprune.models.pruned import PrunedNet, member_tensors, stack_tensors
from metaprune.space import ChannelConfig


def waves(configs: Sequence[ChannelConfig], stack: int) -> list[list[int]]:
    """Positions of ``configs`` in waves of ``stack``: in gene order for ``stack > 1``, else one
    at a time in the order given."""
    n = len(configs)
    order = sorted(range(n), key=lambda i: configs[i].indices) if stack > 1 else list(range(n))
    return [order[w : w + stack] for w in range(0, n, stack)]


def skeleton(arch: Arch, widths: dict[str, int], stack: int, fused: bool) -> nn.Module:
    """A network without storage (meta device), in eval mode, for ``stack`` members padded to
    ``widths`` (BN folded into the convs if ``fused``)."""
    with torch.device("meta"):
        net = PrunedNet(arch, widths, init=False, stack=stack).eval()
    return fuse_bn(net) if fused else net


def assemble(
    arch: Arch,
    members: Sequence[dict[str, torch.Tensor]],
    widths: Sequence[dict[str, int]],
    channels_last: bool,
) -> nn.Module:
    """The network of ``members`` (their tensors, folded BN or not, and widths): plain for one,
    else stacked with each gene at the members' widest."""
    wide = {g: max(w[g] for w in widths) for g in widths[0]}
    fused = not any(k.endswith("running_mean") for k in members[0])
    net = skeleton(arch, wide, len(members), fused)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    own = len(members) == 1 and all(members[0][k].shape == v for k, v in shapes.items())
    tensors = members[0] if own else stack_tensors(members, shapes)  # one: no copy
    net.load_state_dict(tensors, strict=True, assign=True)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def keep(
    arch: Arch,
    net: nn.Module,
    widths: Sequence[dict[str, int]],
    kept: Sequence[int],
    channels_last: bool,
) -> nn.Module:
    """The network of the members ``kept`` of ``net`` (``widths``: of all its members; their
    trained state, recalibrated BN folded or not, is kept), re-padded to their own widest."""
    if len(kept) == len(widths):
        return net
    sd = net.state_dict()
    members = [member_tensors(sd, len(widths), j) for j in kept]
    return assemble(arch, members, [widths[j] for j in kept], channels_last)
