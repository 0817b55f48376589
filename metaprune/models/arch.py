"""Architecture description shared by every model family, and the plain pruned network.

MetaPruning (Liu et al., ICCV 2019, sec. 3.1) encodes a pruned network by the channel count of
every prunable layer.  Each family here (MobileNetV1/V2, ResNet) is written once as a list of
:class:`Block` specs whose channel dimensions name a *gene* of the channel space (or a fixed
count, such as the input channels).  From that one description come

* :class:`PrunedNet`, the ordinary ``nn.Module`` with concrete widths (``build_pruned``),
* the resolved :class:`Layer` list (names, kernel, stride, spatial size) that the analytic cost
  model, the PruningNet's meta blocks and the latency table all read,

so that a family cannot disagree with its own cost model or hypernetwork.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

Dim = str | int
"""A channel dimension: the name of a gene of the channel space, or a fixed channel count."""


@dataclass(frozen=True)
class Conv:
    """One conv -> BN (-> activation) unit; ``depthwise`` convs have ``cin == cout``."""

    cin: Dim
    cout: Dim
    kernel: int = 1
    stride: int = 1
    depthwise: bool = False
    act: bool = True


@dataclass(frozen=True)
class Block:
    """A chain of convs, optionally with a residual (identity, or through ``shortcut``)."""

    body: tuple[Conv, ...]
    residual: bool = False
    shortcut: Conv | None = None
    post_act: bool = False
    maxpool: bool = False


@dataclass(frozen=True)
class Layer:
    """A resolved prunable layer: its module name in :class:`PrunedNet` and its geometry."""

    name: str
    kind: str  # "conv" or "linear"
    cin: Dim
    cout: Dim
    kernel: int
    stride: int
    depthwise: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _conv_out(hw: tuple[int, int], kernel: int, stride: int) -> tuple[int, int]:
    pad = kernel // 2
    return tuple((s + 2 * pad - kernel) // stride + 1 for s in hw)  # type: ignore[return-value]


@dataclass(frozen=True)
class Arch:
    """A whole network: blocks, then global average pooling and a linear classifier."""

    blocks: tuple[Block, ...]
    num_classes: int
    in_chans: int
    input_size: int
    act: str = "relu"

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        """Every conv (in forward order, shortcuts after their block's body) and the classifier."""
        out: list[Layer] = []
        hw = (self.input_size, self.input_size)
        for i, block in enumerate(self.blocks):
            block_in = hw
            for j, conv in enumerate(block.body):
                nxt = _conv_out(hw, conv.kernel, conv.stride)
                out.append(_layer(f"features.{i}.body.{j}", conv, hw, nxt))
                hw = nxt
            if block.shortcut is not None:
                sc = block.shortcut
                out.append(
                    _layer(
                        f"features.{i}.shortcut", sc, block_in, _conv_out(block_in, 1, sc.stride)
                    )
                )
            if block.maxpool:
                hw = _conv_out(hw, 3, 2)
        last = self.blocks[-1].body[-1].cout
        out.append(
            Layer("classifier", "linear", last, self.num_classes, 1, 1, False, (1, 1), (1, 1))
        )
        return tuple(out)

    @property
    def genes_in_order(self) -> list[str]:
        """Gene names in the order their first layer appears."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            for d in (layer.cin, layer.cout):
                if isinstance(d, str):
                    seen.setdefault(d)
        return list(seen)


def _layer(name: str, conv: Conv, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Layer:
    return Layer(
        name, "conv", conv.cin, conv.cout, conv.kernel, conv.stride, conv.depthwise, in_hw, out_hw
    )


def resolve(dim: Dim, widths: Mapping[str, int]) -> int:
    """Channel count of ``dim`` under ``widths`` (gene name -> width)."""
    return dim if isinstance(dim, int) else widths[dim]


def _act(kind: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if kind == "relu6" else nn.ReLU(inplace=True)


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
    """``post(body(x) [+ shortcut(x)])``, then an optional 3x3/2 max pool."""

    def __init__(self, block: Block, widths: Mapping[str, int], act: str, stack: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*(conv_bn(c, widths, act, stack) for c in block.body))
        self.residual = block.residual
        sc = block.shortcut
        self.shortcut = conv_bn(sc, widths, act, stack) if sc else nn.Identity()
        self.post = _act(act) if block.post_act else nn.Identity()
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
        self.features = nn.Sequential(
            *(PrunedBlock(b, widths, arch.act, stack) for b in arch.blocks)
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
