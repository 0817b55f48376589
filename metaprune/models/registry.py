"""Registry of model families: ``create_space``, ``build_pruned``, ``list_models`` (timm-style).

A family is a function of keyword options returning ``(Arch, max widths per gene)``; see
:mod:`metaprune.arch`.  Options are checked by name, so a typo fails at once.  A space saved as
its description (``ChannelSpace.describe()``, in every checkpoint, search, table and export) is
rebuilt by :func:`space_from_description`, which always checks the recorded fingerprint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from metaprune.arch import Arch
from metaprune.io import CheckpointError
from metaprune.models.pruned import PrunedNet
from metaprune.space import DEFAULT_RATIOS, ChannelSpace

FamilySpec = tuple[Arch, dict[str, int]]
_FAMILIES: dict[str, Callable[..., FamilySpec]] = {}
_CHOICES: dict[str, tuple[float, ...]] = {}
STEMS = ("cifar", "imagenet")


def register(
    name: str, choices: Sequence[float] = DEFAULT_RATIOS
) -> Callable[[Callable[..., FamilySpec]], Callable[..., FamilySpec]]:
    """Decorator adding a family constructor to the registry under ``name``; ``choices`` are
    the family's default width ratios (the paper's 31 unless the family defines its own)."""

    def deco(fn: Callable[..., FamilySpec]) -> Callable[..., FamilySpec]:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = fn
        _CHOICES[name] = tuple(choices)
        return fn

    return deco


def list_models() -> list[str]:
    """Names of the registered model families."""
    return sorted(_FAMILIES)


def default_choices(name: str) -> tuple[float, ...]:
    """The width ratios a space of family ``name`` has when no ``choices`` are given."""
    if name not in _CHOICES:
        raise ValueError(f"unknown model family {name!r}; registered: {list_models()}")
    return _CHOICES[name]


def scaled(channels: int, width_mult: float) -> int:
    """Maximum width of a layer under ``width_mult`` (at least 1)."""
    return max(1, round(channels * width_mult))


def stem_defaults(
    stem: str, num_classes: int | None, input_size: int | None
) -> tuple[int, int, int]:
    """(num_classes, input_size, stem stride) with the stem's defaults filled in."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {list(STEMS)}")
    cifar = stem == "cifar"
    num_classes = num_classes if num_classes is not None else (10 if cifar else 1000)
    input_size = input_size if input_size is not None else (32 if cifar else 224)
    if num_classes < 1 or input_size < 1:
        raise ValueError(
            f"num_classes and input_size must be positive, got {num_classes}, {input_size}"
        )
    return num_classes, input_size, 1 if cifar else 2


def create_space(
    name: str, choices: Sequence[float] | None = None, depth: bool = False, **opts: Any
) -> ChannelSpace:
    """The :class:`~metaprune.space.ChannelSpace` of family ``name`` with options ``opts``.

    ``choices`` replaces the family's default width ratios (:func:`default_choices`); ``depth``
    adds a depth gene per removable block.  Unknown families and options raise ``ValueError``
    naming what is available.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; registered: {list_models()}")
    fn = _FAMILIES[name]
    sig = inspect.signature(fn)
    unknown = sorted(set(opts) - set(sig.parameters))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; valid: {list(sig.parameters)}"
        )
    bound = sig.bind(**opts)
    bound.apply_defaults()
    args = bound.arguments
    if "width_mult" in args:
        if not args["width_mult"] > 0:
            raise ValueError(f"width_mult must be positive, got {args['width_mult']}")
        args["width_mult"] = float(args["width_mult"])  # 1 and 1.0: one space, one fingerprint
    if "in_chans" in args and not args["in_chans"] >= 1:
        raise ValueError(f"in_chans must be at least 1, got {args['in_chans']}")
    arch, max_widths = fn(**args)
    resolved = dict(bound.arguments)
    resolved.update(num_classes=arch.num_classes, input_size=arch.input_size)
    ratios = _CHOICES[name] if choices is None else tuple(choices)
    return ChannelSpace(name, resolved, arch, max_widths, ratios, depth=depth)


class SpaceMismatchError(CheckpointError):
    """A saved space description that no longer rebuilds to its recorded fingerprint (the model
    code changed), or that is not the space expected."""


def space_differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``what: found vs wanted`` for every difference of two ``ChannelSpace.describe()`` dicts."""
    out = []
    if found["family"] != wanted["family"]:
        out.append(f"family {found['family']} vs {wanted['family']}")
    a, b = found["options"], wanted["options"]
    out += [
        f"{k} {a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    if list(found["ratios"]) != list(wanted["ratios"]):
        out.append(f"{len(found['ratios'])} vs {len(wanted['ratios'])} width choices")
    if found.get("depth", False) != wanted.get("depth", False):
        out.append(f"depth genes {found.get('depth', False)} vs {wanted.get('depth', False)}")
    return out or [f"fingerprint {found['fingerprint']} vs {wanted['fingerprint']}"]


def space_from_description(
    desc: Mapping[str, Any], source: str = "", expected: ChannelSpace | None = None
) -> ChannelSpace:
    """The space ``desc`` (a ``ChannelSpace.describe()`` dict) describes, rebuilt with
    :func:`create_space`.  Raises :class:`SpaceMismatchError`, naming ``source`` (the file it
    came from), when the rebuilt space's fingerprint is not the recorded one, or when it is not
    ``expected``'s; a description missing its keys, or that this code cannot rebuild (an
    unknown family, option or choice), raises it too."""
    where = f"{source}: " if source else ""
    try:
        family, ratios, options, recorded = (
            desc["family"],
            desc["ratios"],
            desc["options"],
            desc["fingerprint"],
        )
    except (KeyError, TypeError) as e:
        raise SpaceMismatchError(f"{where}not a channel-space description ({e!r} missing)") from e
    try:
        space = create_space(family, choices=ratios, depth=desc.get("depth", False), **options)
    except (TypeError, ValueError) as e:  # a family, option or choice this code does not know
        raise SpaceMismatchError(f"{where}cannot rebuild the space it describes: {e}") from e
    if space.fingerprint != recorded:
        raise SpaceMismatchError(
            f"{where}the {family} space rebuilt here has fingerprint {space.fingerprint}, but "
            f"{recorded} was recorded (the model code changed since it was written?)"
        )
    if expected is not None and expected.fingerprint != recorded:
        diff = "; ".join(space_differences(space.describe(), expected.describe()))
        raise SpaceMismatchError(
            f"{where}holds the {family} space of fingerprint {recorded}, not the expected "
            f"{expected.family} space of fingerprint {expected.fingerprint} ({diff})"
        )
    return space


def build_pruned(space, config, device: torch.device | str | None = None) -> nn.Module:
    """An ordinary ``nn.Module`` with exactly the widths of ``config`` (no masks, no hypernet)."""
    widths = space.widths(config)
    with torch.device(device or "cpu"):
        return PrunedNet(space.arch, widths)
