"""MobileNetV2 (Sandler et al., 2018) as a MetaPruning family.

Gene layout as in MetaPruning (Liu et al., ICCV 2019, sec. 4): one gene per stage output, shared
by every block of the stage because of the residual connections; one gene per block's expanded
(mid) width, which is free; the stem and the final 1x1 conv have a gene each.  The first block
(expansion 1) has no expand conv, so its depthwise conv is tied to the stem gene.
"""

from __future__ import annotations

from metaprune.arch import Arch, Block, Conv
from metaprune.models.registry import FamilySpec, register, scaled, stem_defaults

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
_SETTINGS += [(6, 160, 3, 2), (6, 320, 1, 1)]


@register("mobilenet_v2")
def mobilenet_v2(
    stem: str = "imagenet",
    num_classes: int | None = None,
    in_chans: int = 3,
    input_size: int | None = None,
    width_mult: float = 1.0,
) -> FamilySpec:
    """MobileNetV2; ``stem='cifar'`` uses a stride-1 stem for 32x32 / 28x28 inputs."""
    num_classes, input_size, stem_stride = stem_defaults(stem, num_classes, input_size)
    maxw = {"stem": scaled(32, width_mult)}
    blocks = [Block((Conv(in_chans, "stem", 3, stem_stride),))]
    prev = "stem"
    for k, (t, c, n, s) in enumerate(_SETTINGS, start=1):
        out = f"stage{k}"
        maxw[out] = scaled(c, width_mult)
        for j in range(n):
            stride = s if j == 0 else 1
            if t == 1:
                body = (Conv(prev, prev, 3, stride, depthwise=True), Conv(prev, out, 1, act=False))
            else:
                mid = f"s{k}.b{j}.mid"
                maxw[mid] = maxw[prev] * t
                body = (
                    Conv(prev, mid, 1),
                    Conv(mid, mid, 3, stride, depthwise=True),
                    Conv(mid, out, 1, act=False),
                )
            blocks.append(Block(body, residual=stride == 1 and prev == out))
            prev = out
    maxw["last"] = scaled(1280, width_mult)
    blocks.append(Block((Conv(prev, "last", 1),)))
    return Arch(tuple(blocks), num_classes, in_chans, input_size, "relu6"), maxw
