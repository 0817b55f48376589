"""Channel-Bench-Macro keys <-> :class:`~metaprune.space.ChannelConfig` (the one mapping).

A benchmark key has one digit per gene, in the benchmark's gene order (c0..c6, which is the
gene order of the ``cbm_*`` families, :mod:`metaprune.models.cbm`); digit k in 1..4 is width ratio
k/4 of the gene's maximum.  A space maps to keys when it is a ``cbm_*`` family at the benchmark's
options (3x32x32 input, 10 classes, unscaled widths; either ``stem``, which changes no layer) and
its choices are among 0.25, 0.5, 0.75 and 1.0 (the full space, or a subspace such as
``choices=[0.5, 1.0]``).
"""

from __future__ import annotations

from functools import cache

from metaprune.models.cbm import CBM_CHOICES
from metaprune.models.registry import create_space
from metaprune.space import ChannelConfig, ChannelSpace

BENCHMARK_FAMILIES = ("cbm_mobilenet", "cbm_resnet")
DIGITS = {r: str(k) for k, r in enumerate(CBM_CHOICES, start=1)}
"""Width ratio -> key digit."""


class BenchmarkKeyError(ValueError):
    """A key that is not a key of the space (length, digits, or a width the space lacks)."""


class BenchmarkSpaceError(ValueError):
    """A space whose networks are not the benchmark's (another family, options or choices)."""


@cache
def _benchmark_options(family: str) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(create_space(family).options.items()))


def check_benchmark_space(space: ChannelSpace) -> None:
    """Raise :class:`BenchmarkSpaceError` unless ``space`` maps to benchmark keys."""
    space.require_widths_only("Channel-Bench-Macro")
    if space.family not in BENCHMARK_FAMILIES:
        raise BenchmarkSpaceError(
            f"space {space.family} is not a Channel-Bench-Macro space; "
            f"choose one of {list(BENCHMARK_FAMILIES)}"
        )
    expected = dict(_benchmark_options(space.family))
    # ``stem`` only picks defaults of the options compared here; it changes no layer
    differ = {k: v for k, v in space.options.items() if k != "stem" and expected.get(k) != v}
    if differ:
        raise BenchmarkSpaceError(
            f"{space.family} options {differ} differ from the benchmark's "
            f"{ {k: expected.get(k) for k in differ} }: its networks are not in the benchmark"
        )
    foreign = [r for r in space.ratios if r not in DIGITS]
    if foreign:
        raise BenchmarkSpaceError(
            f"{space.family} choices {foreign} are not benchmark widths {list(CBM_CHOICES)}"
        )


def config_key(config: ChannelConfig) -> str:
    """The benchmark key of ``config`` (e.g. ``'4432214'``)."""
    check_benchmark_space(config.space)
    config.space.check(config)
    return "".join(DIGITS[r] for r in config.ratios())


def key_config(space: ChannelSpace, key: str) -> ChannelConfig:
    """The config of ``space`` with benchmark key ``key``; a malformed key, or one naming a
    width that is not a choice of ``space``, raises :class:`BenchmarkKeyError`."""
    check_benchmark_space(space)
    if not isinstance(key, str) or len(key) != len(space.genes):
        raise BenchmarkKeyError(
            f"benchmark key {key!r} of {space.family} must be a string of {len(space.genes)} "
            "digits 1-4, one per gene"
        )
    bad = sorted({d for d in key if d not in "1234"})
    if bad:
        raise BenchmarkKeyError(f"benchmark key {key!r}: digits {bad} are outside 1-4")
    ratios = [CBM_CHOICES[int(d) - 1] for d in key]
    missing = sorted(set(ratios) - set(space.ratios))
    if missing:
        raise BenchmarkKeyError(
            f"benchmark key {key!r}: width ratios {missing} are not choices of this "
            f"{space.family} space {list(space.ratios)}"
        )
    return space.config([space.ratios.index(r) for r in ratios])
