"""The plain pruned network of an :class:`~metaprune.arch.Arch` at concrete widths.

MetaPruning (Liu et al., ICCV 2019, sec. 3.1 and 4) retrains the searched network from scratch
as an ordinary network: :class:`PrunedNet` is that network, built from the same architecture
description as the cost model and the PruningNet.  ``stack=K`` runs K configs side by side as
one network (grouped convs), which the proxy scorer uses to score several candidates per pass;
the paper scores one candidate at a time.  A removable block whose depth gene is 0 in ``widths``
(a space with depth genes, :mod:`metaprune.space`) is built without its body: ``post(x)``, no
modules, no parameters (sparse structure selection's block removal, Huang & Wang, ECCV 2018).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from metaprune.arch import Arch, Block, Conv, resolve


def _act(kind: str, inplace: bool = True) -> nn.Module:
    return nn.ReLU6(inplace=inplace) if kind == "relu6" else nn.ReLU(inplace=inplace)


def conv_bn(conv: Conv, widths: Mapping[str, int], act: str, stack: int = 1) -> nn.Sequential:
    """Conv -> BN (-> activation); ``stack`` copies side by side as one grouped conv."""
    cin, cout = stack * resolve(conv.cin, widths), stack * resolve(conv.cout, widths)
    groups = cin if conv.depthwise else stack
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, conv.kernel, conv.stride, conv.kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if conv.act:
        mods.append(_act(act))
    return nn.Sequential(*mods)


class PrunedBlock(nn.Module):
    """``post(body(x) [+ shortcut(x)])``, then an optional 3x3/2 max pool; with ``on=False``
    (a removed block of identity shortcut) ``post(x)``: the body is empty, nothing is added."""

    def __init__(
        self, block: Block, widths: Mapping[str, int], act: str, stack: int = 1, on: bool = True
    ) -> None:
        super().__init__()
        body = block.body if on else ()
        self.body = nn.Sequential(*(conv_bn(c, widths, act, stack) for c in body))
        self.residual = block.residual and on
        sc = block.shortcut
        self.shortcut = conv_bn(sc, widths, act, stack) if sc else nn.Identity()
        # a removed body passes its input on: not in place, autograd still needs that tensor
        self.post = _act(act, inplace=on) if block.post_act else nn.Identity()
        self.pool = nn.MaxPool2d(3, 2, 1) if block.maxpool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.residual:
            out += self.shortcut(x)  # in place: the body's output is a fresh conv/BN result
        return self.pool(self.post(out))


class PrunedNet(nn.Module):
    """An ordinary network with the concrete widths of one channel configuration.

    ``init=False`` skips the weight initialisation: for skeletons on the meta device whose
    tensors are supplied at call time (the PruningNet), where ``normal_`` is slow.

    ``stack=K`` (to score K candidates in one forward pass, sec. 3.3) builds K networks of these
    widths side by side: every conv grouped K ways (a depthwise one K times wider), the input
    repeated K times along the channels, the classifier a grouped 1x1 conv, logits of shape
    ``(N, K, classes)``.  Members of smaller widths are zero-padded up to these
    (:func:`stack_tensors`); a zero channel stays zero through BN, activation and residual
    adds, so each member computes exactly its own network.
    """

    def __init__(
        self, arch: Arch, widths: Mapping[str, int], init: bool = True, stack: int = 1
    ) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"PrunedNet stack must be >= 1, got {stack}")
        self.stack = stack
        off = {i for d, i in arch.removable.items() if widths.get(d, 1) == 0}
        self.features = nn.Sequential(
            *(
                PrunedBlock(b, widths, arch.act, stack, i not in off)
                for i, b in enumerate(arch.blocks)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        last, classes = resolve(arch.blocks[-1].body[-1].cout, widths), arch.num_classes
        self.classifier: nn.Module = (
            nn.Linear(last, classes)
            if stack == 1
            else nn.Conv2d(stack * last, stack * classes, 1, groups=stack)
        )
        for m in self.modules() if init else ():
            if m is self.classifier:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stack > 1:
            x = self.pool(self.features(x.repeat(1, self.stack, 1, 1)))
            return self.classifier(x).view(len(x), self.stack, -1)
        x = self.pool(self.features(x))  # (N, C, 1, 1)
        return self.classifier(torch.flatten(x, 1))


def stack_tensors(
    members: Sequence[Mapping[str, torch.Tensor]], shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """The state dict of a stacked :class:`PrunedNet` (``shapes``: its tensor shapes) holding
    ``members`` (state dicts of plain networks, or :func:`member_tensors` of another stack).

    Member ``j`` fills the start of the ``j``-th of ``len(members)`` equal blocks along dim 0
    of every tensor (and the start of the other dims); the padding is zero.  A member tensor
    larger than its block is cropped to it (only ever padding, when a stack is narrowed to some
    of its members).  A scalar (BN's batch count, equal in all members) is the first member's.
    """
    k, out = len(members), {}
    for name, shape in shapes.items():
        first = members[0][name]
        if not len(shape):
            out[name] = first.detach().clone()
            continue
        block = (shape[0] // k, *shape[1:])
        t = first.new_zeros(shape)
        for j, m in enumerate(members):
            v = m[name].detach()
            v = v.flatten(len(shape) - 1) if v.dim() > len(shape) else v  # 1x1 conv -> linear
            v = v.reshape(*v.shape, *[1] * (len(shape) - v.dim()))  # linear -> 1x1 conv
            v = v[tuple(slice(0, min(a, b)) for a, b in zip(v.shape, block, strict=True))]
            region = (slice(j * block[0], j * block[0] + v.shape[0]), *map(slice, v.shape[1:]))
            t[region] = v
        out[name] = t
    return out


def member_tensors(
    tensors: Mapping[str, torch.Tensor], stack: int, j: int
) -> dict[str, torch.Tensor]:
    """Member ``j``'s (zero-padded) block of every tensor of a ``stack``-member network."""
    return {
        n: t if not t.dim() else t[j * (len(t) // stack) : (j + 1) * (len(t) // stack)]
        for n, t in tensors.items()
    }
