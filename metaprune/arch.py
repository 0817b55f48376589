"""The torch-free architecture description shared by every model family (the ground floor).

MetaPruning (Liu et al., ICCV 2019, sec. 3.1) encodes a pruned network by the channel count of
every prunable layer.  Each family here (MobileNetV1/V2, ResNet) is written once as a list of
:class:`Block` specs whose channel dimensions name a *gene* of the channel space (or a fixed
count, such as the input channels).  From that one description come

* :class:`~metaprune.models.pruned.PrunedNet`, the ordinary ``nn.Module`` with concrete widths
  (``build_pruned``),
* the resolved :class:`Layer` list (names, kernel, stride, spatial size) that the analytic cost
  model, the PruningNet's meta blocks and the latency table all read,
* the *removable* blocks (:attr:`Arch.removable`): residual blocks with an identity shortcut,
  whose body can go altogether (leaving ``post(x)``), which a channel space with depth genes
  switches on and off (beyond MetaPruning, which searches widths only; block removal is sparse
  structure selection's, Huang & Wang, ECCV 2018, sec. 3.2),

so that a family cannot disagree with its own cost model or hypernetwork.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

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
    """A resolved prunable layer: its module name in ``PrunedNet`` and its geometry."""

    name: str
    kind: str  # "conv" or "linear"
    cin: Dim
    cout: Dim
    kernel: int
    stride: int
    depthwise: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    block: int = -1
    """Index of the block the layer belongs to (-1: the classifier)."""


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
                out.append(_layer(f"features.{i}.body.{j}", conv, hw, nxt, i))
                hw = nxt
            if block.shortcut is not None:
                sc = block.shortcut
                out.append(
                    _layer(
                        f"features.{i}.shortcut", sc, block_in, _conv_out(block_in, 1, sc.stride), i
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

    def inner_genes(self, i: int) -> tuple[str, ...]:
        """The genes only block ``i``'s body holds (not its input or output), sorted: they carry
        nothing once the body's output is zero, and nothing at all once the body is gone."""
        body = self.blocks[i].body
        mine = {d for c in body for d in (c.cin, c.cout) if isinstance(d, str)}
        for ly in self.layers:
            if ly.block != i:
                mine -= {ly.cin, ly.cout}
        return tuple(sorted(mine - {body[0].cin, body[-1].cout}))

    @cached_property
    def removable(self) -> dict[str, int]:
        """Depth gene name -> index of every block whose body can be removed: a residual block
        with an identity shortcut (``post(body(x) + x)`` becomes ``post(x)``).  The name is the
        dotted prefix its inner genes share plus ``.depth`` (ResNet's ``s2.b1.mid`` gives
        ``s2.b1.depth``), else ``features.<i>.depth``."""
        out: dict[str, int] = {}
        for i, b in enumerate(self.blocks):
            if not (b.residual and b.shortcut is None):
                continue
            prefixes = {g.rpartition(".")[0] for g in self.inner_genes(i)}
            name = f"{prefixes.pop()}.depth" if len(prefixes) == 1 and "" not in prefixes else ""
            out[name if name and name not in self.genes_in_order else f"features.{i}.depth"] = i
        return out


def _layer(
    name: str, conv: Conv, in_hw: tuple[int, int], out_hw: tuple[int, int], block: int
) -> Layer:
    return Layer(
        name,
        "conv",
        conv.cin,
        conv.cout,
        conv.kernel,
        conv.stride,
        conv.depthwise,
        in_hw,
        out_hw,
        block,
    )


def resolve(dim: Dim, widths: Mapping[str, int]) -> int:
    """Channel count of ``dim`` under ``widths`` (gene name -> width)."""
    return dim if isinstance(dim, int) else widths[dim]
