"""MobileNetV1 (Howard et al., 2017) as a MetaPruning family.

Gene layout as in MetaPruning (Liu et al., ICCV 2019, sec. 4): one gene per pointwise conv output
(plus the stem); each depthwise conv is tied to its input gene, since a depthwise conv has as many
outputs as inputs.
"""

from __future__ import annotations

from metaprune.arch import Arch, Block, Conv
from metaprune.models.registry import FamilySpec, register, scaled, stem_defaults

# (output channels, stride) of the 13 depthwise-separable blocks
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
_BLOCKS += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


@register("mobilenet_v1")
def mobilenet_v1(
    stem: str = "imagenet",
    num_classes: int | None = None,
    in_chans: int = 3,
    input_size: int | None = None,
    width_mult: float = 1.0,
) -> FamilySpec:
    """MobileNetV1; ``stem='cifar'`` uses a stride-1 stem for 32x32 / 28x28 inputs."""
    num_classes, input_size, stem_stride = stem_defaults(stem, num_classes, input_size)
    maxw = {"stem": scaled(32, width_mult)}
    blocks = [Block((Conv(in_chans, "stem", 3, stem_stride),))]
    prev = "stem"
    for i, (c, s) in enumerate(_BLOCKS, start=1):
        gene = f"pw{i}"
        maxw[gene] = scaled(c, width_mult)
        blocks.append(Block((Conv(prev, prev, 3, s, depthwise=True), Conv(prev, gene, 1))))
        prev = gene
    return Arch(tuple(blocks), num_classes, in_chans, input_size, "relu"), maxw
