"""ResNets (He et al., 2016) as MetaPruning families: basic and bottleneck blocks, both stems.

Gene layout as in MetaPruning (Liu et al., ICCV 2019, sec. 4): one gene per stage output, tied
through the residual shortcuts of the stage; one gene per block's inner width (basic: the first
conv; bottleneck: the first and the second conv).  Where the stem feeds the first stage through an
identity shortcut (basic blocks with equal widths), the stem shares the first stage's gene.
Downsampling shortcuts are 1x1 conv + BN (option B); CIFAR ResNets usually use the parameter-free
option A, which cannot follow a pruned width, so this is a deliberate departure.
"""

from __future__ import annotations

from metaprune.arch import Arch, Block, Conv
from metaprune.models.registry import FamilySpec, register, scaled, stem_defaults


def _resnet(
    depths: tuple[int, ...],
    widths: tuple[int, ...],
    bottleneck: bool,
    stem: str,
    num_classes: int | None,
    in_chans: int,
    input_size: int | None,
    width_mult: float,
) -> FamilySpec:
    num_classes, input_size, _ = stem_defaults(stem, num_classes, input_size)
    expansion = 4 if bottleneck else 1
    stem_gene = "stage1" if not bottleneck else "stem"
    maxw = {stem_gene: scaled(widths[0], width_mult)}
    if stem == "cifar":
        blocks = [Block((Conv(in_chans, stem_gene, 3, 1),))]
    else:
        blocks = [Block((Conv(in_chans, stem_gene, 7, 2),), maxpool=True)]
    prev = stem_gene
    for k, (depth, width) in enumerate(zip(depths, widths, strict=True), start=1):
        out = f"stage{k}"
        maxw[out] = scaled(width * expansion, width_mult)
        for j in range(depth):
            stride = 2 if j == 0 and k > 1 else 1
            m1 = f"s{k}.b{j}.mid"
            maxw[m1] = scaled(width, width_mult)
            if bottleneck:
                m2 = f"s{k}.b{j}.mid2"
                maxw[m2] = scaled(width, width_mult)
                body = (Conv(prev, m1, 1), Conv(m1, m2, 3, stride), Conv(m2, out, 1, act=False))
            else:
                body = (Conv(prev, m1, 3, stride), Conv(m1, out, 3, 1, act=False))
            shortcut = None
            if stride != 1 or prev != out:
                shortcut = Conv(prev, out, 1, stride, act=False)
            blocks.append(Block(body, residual=True, shortcut=shortcut, post_act=True))
            prev = out
    return Arch(tuple(blocks), num_classes, in_chans, input_size, "relu"), maxw


def _family(depths: tuple[int, ...], widths: tuple[int, ...], bottleneck: bool, stem: str):
    def build(
        stem: str = stem,
        num_classes: int | None = None,
        in_chans: int = 3,
        input_size: int | None = None,
        width_mult: float = 1.0,
    ) -> FamilySpec:
        return _resnet(
            depths, widths, bottleneck, stem, num_classes, in_chans, input_size, width_mult
        )

    return build


_CIFAR_WIDTHS = (16, 32, 64)
_IMAGENET_WIDTHS = (64, 128, 256, 512)
register("resnet20")(_family((3, 3, 3), _CIFAR_WIDTHS, False, "cifar"))
register("resnet56")(_family((9, 9, 9), _CIFAR_WIDTHS, False, "cifar"))
register("resnet18")(_family((2, 2, 2, 2), _IMAGENET_WIDTHS, False, "imagenet"))
register("resnet50")(_family((3, 4, 6, 3), _IMAGENET_WIDTHS, True, "imagenet"))
