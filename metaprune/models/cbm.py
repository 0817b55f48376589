"""The two Channel-Bench-Macro search spaces (Su et al., BCNet, CVPR 2021) as model families.

Channel-Bench-Macro trained every network of two small width-search spaces alone on CIFAR-10,
so a MetaPruning proxy (Liu et al., ICCV 2019, sec. 3.2) and its search (sec. 3.3) can be judged
against stand-alone accuracy.  Both spaces have 7 genes (the benchmark's c0..c6) with 4 width
choices each, ratios 0.25, 0.5, 0.75 and 1.0 of the gene's maximum: the family's default choices
(in place of the paper's 31).  Every conv is bias-free and followed by BN; activations are ReLU.

``cbm_mobilenet`` (maxima 128, 768, 768, 768, 256, 1536, 1024), genes in the benchmark's order:

=====  ============  ========================================================================
c0     ``stage1``    the 3x3 stride-2 stem and the outputs of blocks 1-2 (tied by identities)
c1-c2  ``s1.b0.mid``, ``s1.b1.mid``: expanded widths of blocks 1-2 (1x1, 3x3 depthwise, 1x1)
c3     ``s2.b0.mid`` expanded width of block 3 (depthwise stride 2, no shortcut)
c4     ``stage2``    the outputs of blocks 3-4 (tied by block 4's identity)
c5     ``s2.b1.mid`` expanded width of block 4
c6     ``last``      the 1x1 head conv before global pooling and the linear classifier
=====  ============  ========================================================================

``cbm_resnet`` (maxima 256, 256, 256, 512, 512, 512, 512): a 3x3 stride-2 stem, then five
basic blocks of two 3x3 convs, ``ReLU(x + body(x))`` except block 3 (first conv stride 2),
which has no shortcut: c0 ``stage1`` (stem and outputs of blocks 1-2), c1-c2 ``s1.b0.mid``,
``s1.b1.mid``, c3 ``s2.b0.mid``, c4 ``stage2`` (outputs of blocks 3-5), c5-c6 ``s2.b1.mid``,
``s2.b2.mid``.

The benchmark defines the networks at 3x32x32 input with 10 classes (the defaults here).  Its
stem is fixed (3x3, stride 2), so ``stem`` only picks the defaults of ``num_classes`` and
``input_size`` as in the other families (``imagenet``: 1000 classes at 224 px, the same layers);
the benchmark's figures hold for the defaults only.
"""

from __future__ import annotations

from metaprune.arch import Arch, Block, Conv
from metaprune.models.registry import FamilySpec, register, scaled, stem_defaults

CBM_CHOICES = (0.25, 0.5, 0.75, 1.0)
"""The benchmark's width ratios: digit k of a key is ratio k/4."""

_MOBILENET = {"stage1": 128, "s1.b0.mid": 768, "s1.b1.mid": 768, "s2.b0.mid": 768}
_MOBILENET |= {"stage2": 256, "s2.b1.mid": 1536, "last": 1024}
_RESNET = {"stage1": 256, "s1.b0.mid": 256, "s1.b1.mid": 256, "s2.b0.mid": 512}
_RESNET |= {"stage2": 512, "s2.b1.mid": 512, "s2.b2.mid": 512}


def _inverted(cin: str, mid: str, cout: str, stride: int) -> Block:
    """1x1 expand, 3x3 depthwise, 1x1 project (no activation); identity when shapes allow."""
    body = (
        Conv(cin, mid, 1),
        Conv(mid, mid, 3, stride, depthwise=True),
        Conv(mid, cout, 1, act=False),
    )
    return Block(body, residual=stride == 1 and cin == cout)


def _basic(cin: str, mid: str, cout: str, stride: int) -> Block:
    """Two 3x3 convs, then ``ReLU(x + body(x))``, or ``ReLU(body(x))`` when shapes differ."""
    body = (Conv(cin, mid, 3, stride), Conv(mid, cout, 3, act=False))
    return Block(body, residual=stride == 1 and cin == cout, post_act=True)


def _space(
    maxima: dict[str, int],
    blocks: list[Block],
    in_chans: int,
    stem: str,
    num_classes: int | None,
    input_size: int | None,
    width_mult: float,
) -> FamilySpec:
    num_classes, input_size, _ = stem_defaults(stem, num_classes, input_size)
    stem_block = Block((Conv(in_chans, "stage1", 3, 2),))
    arch = Arch((stem_block, *blocks), num_classes, in_chans, input_size, "relu")
    return arch, {g: scaled(m, width_mult) for g, m in maxima.items()}


@register("cbm_mobilenet", choices=CBM_CHOICES)
def cbm_mobilenet(
    stem: str = "cifar",
    num_classes: int | None = None,
    in_chans: int = 3,
    input_size: int | None = None,
    width_mult: float = 1.0,
) -> FamilySpec:
    """The Channel-Bench-Macro MobileNet space (inverted residual blocks, 7 genes)."""
    blocks = [
        _inverted("stage1", "s1.b0.mid", "stage1", 1),
        _inverted("stage1", "s1.b1.mid", "stage1", 1),
        _inverted("stage1", "s2.b0.mid", "stage2", 2),
        _inverted("stage2", "s2.b1.mid", "stage2", 1),
        Block((Conv("stage2", "last", 1),)),
    ]
    return _space(_MOBILENET, blocks, in_chans, stem, num_classes, input_size, width_mult)


@register("cbm_resnet", choices=CBM_CHOICES)
def cbm_resnet(
    stem: str = "cifar",
    num_classes: int | None = None,
    in_chans: int = 3,
    input_size: int | None = None,
    width_mult: float = 1.0,
) -> FamilySpec:
    """The Channel-Bench-Macro ResNet space (basic blocks, 7 genes)."""
    blocks = [
        _basic("stage1", "s1.b0.mid", "stage1", 1),
        _basic("stage1", "s1.b1.mid", "stage1", 1),
        _basic("stage1", "s2.b0.mid", "stage2", 2),
        _basic("stage2", "s2.b1.mid", "stage2", 1),
        _basic("stage2", "s2.b2.mid", "stage2", 1),
    ]
    return _space(_RESNET, blocks, in_chans, stem, num_classes, input_size, width_mult)
