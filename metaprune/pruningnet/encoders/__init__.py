"""The meta blocks' inputs: one encoding vector per prunable conv for the widths of a config.

MetaPruning (Liu et al., ICCV 2019, sec. 3.2) feeds each meta block a *network encoding*; an
encoder maps the widths of one config to an ``(n_convs, dim)`` tensor, row ``i`` the input of
conv ``i``'s meta block (convs in the order of the architecture's layers).  A registry, one file
a member:

* ``layer`` (the paper) and ``global`` (:mod:`.ratios`): width ratios, no parameters;
* ``graph`` (:mod:`.graph`): a graph convolution network over the network's topology (Graph
  PruningNet), trained jointly with the meta blocks.

Every encoder gathers its ratios from one vector ``[1.0, ratio(gene_0), ratio(gene_1), ...]``
(1.0 stands for a fixed dimension, such as the image channels), so all of them see a config the
same way.  Encoders hold no persistent buffers (their index tables follow from the space), so a
parameter-free encoder adds nothing to a PruningNet's state dict: files written before encoders
were modules load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from metaprune.arch import Dim, Layer
from metaprune.space import ChannelSpace


class Encoder(nn.Module):
    """Base: ``forward(widths) -> (n_convs, dim)`` for the gene widths of one config."""

    dim: int
    """Length of each conv's encoding vector."""

    def __init__(self, space: ChannelSpace, convs: Sequence[Layer]) -> None:
        super().__init__()
        self._genes = [g.name for g in space.genes]
        self._max = space.widths(space.max())

        def slot(dim: Dim) -> int:  # 0: a fixed dimension (ratio 1.0), 1 + k: gene k
            return 0 if isinstance(dim, int) else 1 + space.gene_index[dim]

        slots = [[slot(ly.cin), slot(ly.cout)] for ly in convs]
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.long), persistent=False)

    def ratios(self, widths: Mapping[str, int]) -> torch.Tensor:
        """``(1 + n_genes,)``: 1.0, then each gene's width over its maximum."""
        values = [1.0] + [widths[g] / self._max[g] for g in self._genes]
        return torch.tensor(values, device=self.slots.device)

    def layer_ratios(self, widths: Mapping[str, int]) -> torch.Tensor:
        """``(n_convs, 2)``: each conv's (input, output) width ratio."""
        return self.ratios(widths)[self.slots]

    def forward(self, widths: Mapping[str, int]) -> torch.Tensor:
        raise NotImplementedError


EncoderFactory = Callable[[ChannelSpace, Sequence[Layer], int], Encoder]
ENCODERS: dict[str, EncoderFactory] = {}
"""Encoder name -> ``factory(space, convs, hidden)`` (``hidden``: the meta blocks' width)."""


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Class decorator adding an encoder to :data:`ENCODERS`."""

    def add(factory: EncoderFactory) -> EncoderFactory:
        ENCODERS[name] = factory
        return factory

    return add


def check_encoder(name: str) -> None:
    """Raise ``ValueError`` naming ``pruningnet.encoding`` when ``name`` is no encoder."""
    if name not in ENCODERS:
        raise ValueError(f"unknown pruningnet.encoding {name!r}; choose one of {list(ENCODERS)}")


def create_encoder(name: str, space: ChannelSpace, convs: Sequence[Layer], hidden: int) -> Encoder:
    """The encoder ``name`` of ``space``'s ``convs``."""
    check_encoder(name)
    return ENCODERS[name](space, convs, hidden)


# the members register themselves on import
from metaprune.pruningnet.encoders import graph, ratios  # noqa: E402, F401

__all__ = ["ENCODERS", "Encoder", "check_encoder", "create_encoder", "register_encoder"]
