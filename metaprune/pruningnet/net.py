"""The PruningNet: a hypernetwork that generates the weights of any config of a channel space.

MetaPruning (Liu et al., ICCV 2019, sec. 3.1-3.2).  Every prunable conv of the family (the first
conv included) gets a :class:`~metaprune.pruningnet.blocks.MetaConv` meta block fed with a
network encoding, as in the official code, which generates all convs with FC meta blocks.  The
encodings are a registry (:mod:`metaprune.pruningnet.encoders`):

* ``encoding="layer"`` (the paper): the layer's (input width / max, output width / max) ratios;
* ``encoding="global"``: the width ratio of every gene of the config;
* ``encoding="graph"`` (Graph PruningNet): a GCN over the network's topology, trained jointly,
  each node's embedding feeding its layer's meta block.

:meth:`PruningNet.node_embeddings` returns the meta blocks' inputs for a config (one row per
conv, in layer order) and :meth:`PruningNet.gene_embeddings` their mean per gene, as features
for search strategies.

The FC classifier is not generated: its weight is cropped (columns ``[:cin]``) from one shared
max-width ``nn.Linear``, as the official code uses a plain ``nn.Linear`` classifier.  Each BN layer
keeps one BN per distinct width of its gene (:class:`~metaprune.pruningnet.blocks.ChoiceBN`,
selected by the width's index in ``Gene.unique_widths``, so configs with equal widths are the same
network), non-affine by default as in the official code.

The forward is stateless: :meth:`PruningNet.forward` walks the family's architecture
description (:class:`~metaprune.arch.Arch`, the one :class:`~metaprune.models.pruned.PrunedNet`
is built from) with functional ops (``F.conv2d`` with the generated weight and the call's own
stride, padding and groups; ``F.batch_norm`` on the chosen BN row), so no call writes to a shared
module and two threads running different configs at once cannot see each other's network.  Only
the chosen BN rows' running statistics change, in training mode, as in any BN (two threads
training at once update a row they share in either order).  :meth:`PruningNet.generate` returns
the same tensors as a state dict that ``build_pruned(space, config)`` loads strictly; tests check
that both give the same outputs.  The config is always an argument; no module holds an "active"
sub-network.  ``forward(x, config, part)`` runs only the units ``part`` of the network (blocks
``0 .. B-1``, then the head ``B``: pooling and classifier), which full-net supervision uses to
feed one stage another network's features (:mod:`metaprune.pruningnet.supervision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.arch import Conv, Dim, resolve
from metaprune.pruningnet.blocks import ChoiceBN, MetaConv
from metaprune.pruningnet.encoders import check_encoder, create_encoder
from metaprune.space import ChannelConfig, ChannelSpace

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm2d's defaults, which PrunedNet uses


@dataclass
class PruningNetConfig:
    """Options of the PruningNet (config group ``pruningnet``)."""

    hidden: int = 32
    """Width of each meta block's hidden layer (the official code uses 32 and 64)."""
    encoding: str = "layer"
    """Meta block input: ``layer`` (the layer's in/out width ratios, the paper), ``global`` or
    ``graph`` (a GCN over the topology, :mod:`metaprune.pruningnet.encoders.graph`)."""
    bn_affine: bool = False
    """Learn a BN scale and shift per width choice (the official code: ``False``)."""

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"pruningnet.hidden must be >= 1, got {self.hidden}")
        check_encoder(self.encoding)


def _key(name: str) -> str:
    return name.replace(".", "_")


class PruningNet(nn.Module):
    """Generates the weights of, and runs, any :class:`ChannelConfig` of ``space``."""

    def __init__(self, space: ChannelSpace, config: PruningNetConfig | None = None) -> None:
        super().__init__()
        space.require_widths_only("the PruningNet")
        self.space = space
        self.config = config or PruningNetConfig()
        # the data split the weights were trained on (metaprune.data.identity.split_identity),
        # set by training and by loading; None when unknown
        self.train_split: dict[str, Any] | None = None
        cfg = self.config
        self._max = space.widths(space.max())
        self._convs = [ly for ly in space.arch.layers if ly.kind == "conv"]
        # the convs of each block (indices into _convs), for running a part of the network
        self._block_convs = [
            [k for k, ly in enumerate(self._convs) if ly.name.startswith(f"features.{i}.")]
            for i in range(len(space.arch.blocks))
        ]
        linear = space.arch.layers[-1]
        self.encoder = create_encoder(cfg.encoding, space, self._convs, cfg.hidden)
        with torch.no_grad():  # each meta block is scaled at its max-width encoding
            init = self.encoder(self._max)
        self.meta = nn.ModuleDict()
        self.bn = nn.ModuleDict()
        for ly, enc in zip(self._convs, init, strict=True):
            cin, cout = resolve(ly.cin, self._max), resolve(ly.cout, self._max)
            self.meta[_key(ly.name)] = MetaConv(
                self.encoder.dim, cfg.hidden, cout, cin, ly.kernel, ly.depthwise, enc
            )
            self.bn[_key(ly.name)] = ChoiceBN(len(self._bn_widths(ly.cout)), cout, cfg.bn_affine)
        self.classifier = nn.Linear(resolve(linear.cin, self._max), space.num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def _bn_widths(self, dim: Dim) -> tuple[int, ...]:
        """The widths a BN over ``dim`` can have; a config picks its row by index in these."""
        return (
            (dim,)
            if isinstance(dim, int)
            else self.space.genes[self.space.gene_index[dim]].unique_widths
        )

    @property
    def nodes(self) -> list[str]:
        """The module names of the generated convs: the rows of :meth:`node_embeddings`."""
        return [ly.name for ly in self._convs]

    @torch.no_grad()
    def node_embeddings(self, config: ChannelConfig) -> torch.Tensor:
        """``(n_convs, d)``: the meta blocks' inputs for ``config``, one row per conv in layer
        order (:attr:`nodes`); for ``encoding="graph"`` the GCN's node embeddings."""
        return self.encoder(self.space.widths(config)).clone()

    @torch.no_grad()
    def gene_embeddings(self, config: ChannelConfig) -> torch.Tensor:
        """``(n_genes, d)``: the mean of :meth:`node_embeddings` over the convs whose output
        width is each gene, in ``space.genes`` order."""
        nodes = self.node_embeddings(config)
        rows = [
            nodes[[k for k, ly in enumerate(self._convs) if ly.cout == g.name]].mean(0)
            for g in self.space.genes
        ]
        return torch.stack(rows)

    def _tensors(
        self, widths: dict[str, int], part: range | None = None
    ) -> dict[str, torch.Tensor]:
        """The parameters and buffers of the plain network of ``widths``, generated or selected:
        every one, or those of the units in ``part`` (see :meth:`forward`)."""
        units = range(len(self.space.arch.blocks) + 1) if part is None else part
        enc = self.encoder(widths)
        out: dict[str, torch.Tensor] = {}
        for u in units:
            for i in self._block_convs[u] if u < len(self._block_convs) else ():
                ly = self._convs[i]
                cin, cout = resolve(ly.cin, widths), resolve(ly.cout, widths)
                out[f"{ly.name}.0.weight"] = self.meta[_key(ly.name)](enc[i], cout, cin)
                bn = self.bn[_key(ly.name)].tensors(self._bn_widths(ly.cout).index(cout), cout)
                out.update({f"{ly.name}.1.{k}": v for k, v in bn.items()})
        if len(self._block_convs) in units:
            last = resolve(self.space.arch.layers[-1].cin, widths)
            out["classifier.weight"] = self.classifier.weight[:, :last]
            out["classifier.bias"] = self.classifier.bias
        return out

    def _conv_bn(
        self,
        x: torch.Tensor,
        name: str,
        conv: Conv,
        tensors: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """One conv -> BN (-> activation) unit of :func:`~metaprune.models.pruned.conv_bn`."""
        w = tensors[f"{name}.0.weight"]  # (cout, cin / groups, k, k)
        groups = w.shape[0] if conv.depthwise else 1
        x = F.conv2d(x, w, None, conv.stride, conv.kernel // 2, 1, groups)
        bn = {k: tensors[f"{name}.1.{k}"] for k in ChoiceBN.NAMES}
        if self.training:
            bn["num_batches_tracked"].add_(1)
        x = F.batch_norm(
            x,
            bn["running_mean"],
            bn["running_var"],
            bn["weight"],
            bn["bias"],
            self.training,
            BN_MOMENTUM,
            BN_EPS,
        )
        return self._act(x) if conv.act else x

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x, inplace=True) if self.space.arch.act == "relu6" else F.relu(x, True)

    def forward(
        self, x: torch.Tensor, config: ChannelConfig, part: range | None = None
    ) -> torch.Tensor:
        """Logits of the network of ``config`` with generated weights (``PrunedNet``'s forward,
        written with functional ops on tensors local to this call).

        ``part`` (a range of units: blocks ``0 .. B-1`` of the architecture, then the head ``B``,
        pooling and classifier) runs only those units on ``x``, the input of the first: the
        features of the last block, or logits when the head is in it.  In training mode the
        batch statistics update the running statistics of the chosen BN rows only.
        """
        blocks = self.space.arch.blocks
        part = range(len(blocks) + 1) if part is None else part
        if not part or part.step != 1 or part.start < 0 or part.stop > len(blocks) + 1:
            raise ValueError(f"part must be a non-empty range within range(0, {len(blocks) + 1})")
        t = self._tensors(self.space.widths(config), part)
        for i in part:
            if i == len(blocks):
                x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
                return F.linear(x, t["classifier.weight"], t["classifier.bias"])
            block = blocks[i]
            inp = x
            for j, conv in enumerate(block.body):
                x = self._conv_bn(x, f"features.{i}.body.{j}", conv, t)
            if block.residual:
                sc = block.shortcut
                x += inp if sc is None else self._conv_bn(inp, f"features.{i}.shortcut", sc, t)
            if block.post_act:
                x = self._act(x)
            if block.maxpool:
                x = F.max_pool2d(x, 3, 2, 1)
        return x

    @torch.no_grad()
    def generate(self, config: ChannelConfig) -> dict[str, torch.Tensor]:
        """A state dict (detached copies) that ``build_pruned(space, config)`` loads strictly."""
        tensors = self._tensors(self.space.widths(config))
        return {k: v.detach().clone() for k, v in tensors.items()}

    def extra_repr(self) -> str:
        return f"space={self.space.family}, {self.config}"


def create_pruningnet(
    space: ChannelSpace,
    hidden: int = 32,
    encoding: str = "layer",
    bn_affine: bool = False,
) -> PruningNet:
    """The PruningNet of ``space`` (any registered family, either stem)."""
    if not isinstance(space, ChannelSpace):
        raise TypeError(f"create_pruningnet needs a ChannelSpace, got {type(space).__name__}")
    return PruningNet(space, PruningNetConfig(hidden, encoding, bn_affine))
