"""Width-ratio encodings (MetaPruning, Liu et al., ICCV 2019, sec. 3.2), without parameters.

* ``layer`` (the paper): each conv's meta block gets the conv's (input width / max, output
  width / max) ratios, 1.0 for a fixed dimension such as the image channels (the official
  MobileNetV2 code feeds the three ratios of a whole inverted-residual block to each of its
  convs instead);
* ``global``: every meta block gets the width ratio of every gene of the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from metaprune.arch import Layer
from metaprune.pruningnet.encoders import Encoder, register_encoder
from metaprune.space import ChannelSpace


@register_encoder("layer")
class LayerEncoder(Encoder):
    """``(n_convs, 2)``: each conv's own (input, output) width ratios."""

    def __init__(self, space: ChannelSpace, convs: Sequence[Layer], hidden: int) -> None:
        super().__init__(space, convs)
        self.dim = 2

    def forward(self, widths: Mapping[str, int]) -> torch.Tensor:
        return self.layer_ratios(widths)


@register_encoder("global")
class GlobalEncoder(Encoder):
    """``(n_convs, n_genes)``: the ratio of every gene, the same row for every conv."""

    def __init__(self, space: ChannelSpace, convs: Sequence[Layer], hidden: int) -> None:
        super().__init__(space, convs)
        self.dim = len(space.genes)
        self._n = len(convs)

    def forward(self, widths: Mapping[str, int]) -> torch.Tensor:
        return self.ratios(widths)[1:].expand(self._n, -1)
