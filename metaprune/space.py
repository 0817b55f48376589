"""The channel search space: genes (coupled layer groups), width choices, and configurations.

MetaPruning (Liu et al., ICCV 2019, sec. 3.1-3.3) describes a pruned network by a *network
encoding vector*: the channel count of every prunable layer, each picked from 31 ratios
0.10, 0.13, ..., 1.00 of the original width.  Layers that must share a width (the outputs of a
residual stage, a depthwise conv and its input) form one *gene*.  A :class:`ChannelConfig` holds one
choice index per gene and is the single value that travels through training, search, cost model
and retraining.

Beyond the paper, a space made with ``depth=True`` (``space.depth=true``) also has a *depth gene*
per removable residual block (:attr:`metaprune.arch.Arch.removable`), after the width genes, with
the two choices off and on (:data:`DEPTH_CHOICES`: how many copies of the block's body there are);
an off block's body is not built, and its inner genes (:meth:`metaprune.arch.Arch.inner_genes`)
have width 0 in :meth:`ChannelSpace.widths`.  This is sparse structure selection's block removal
(Huang & Wang, ECCV 2018, sec. 3.2).  Code that knows width genes only (the PruningNet, the
search, latency tables, benchmark keys) refuses such a space with :class:`DepthSpaceError`
(:meth:`ChannelSpace.require_widths_only`).  Without depth genes a space is exactly as before:
the same genes and fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from metaprune.arch import Arch, resolve

DEFAULT_RATIOS: tuple[float, ...] = tuple(round(0.10 + 0.03 * i, 2) for i in range(31))
"""The paper's 31 width ratios 0.10, 0.13, ..., 1.00."""

DEPTH_CHOICES: tuple[int, ...] = (0, 1)
"""The choices of a depth gene: the block's body is absent (0) or present (1)."""

RngLike = np.random.Generator | int | None


def as_rng(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from a Generator, a seed or ``None``."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclass(frozen=True)
class Gene:
    """A group of layers sharing one width: its maximum and the channel count of each choice."""

    name: str
    max_channels: int
    choices: tuple[int, ...]

    @cached_property
    def unique_widths(self) -> tuple[int, ...]:
        """The distinct channel counts the choices produce, ascending."""
        return tuple(sorted(set(self.choices)))


def widths_for(max_channels: int, ratios: Sequence[float]) -> tuple[int, ...]:
    """Channel count of each ratio: ``max(1, round(ratio * max))``."""
    return tuple(max(1, round(r * max_channels)) for r in ratios)


class DepthSpaceError(ValueError):
    """A space with depth genes handed to code that handles width genes only."""


class ChannelSpace:
    """The genes of one model family with its options, and the family's architecture.

    ``depth=True`` adds a depth gene per removable block (module docstring)."""

    def __init__(
        self,
        family: str,
        options: Mapping[str, Any],
        arch: Arch,
        max_widths: Mapping[str, int],
        ratios: Sequence[float] = DEFAULT_RATIOS,
        depth: bool = False,
    ) -> None:
        ratios = tuple(float(r) for r in ratios)
        if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"space choices must be ratios in (0, 1], got {list(ratios)}")
        if list(ratios) != sorted(set(ratios)):
            raise ValueError(f"space choices must be strictly increasing, got {list(ratios)}")
        self.family = family
        self.options = dict(options)
        self.arch = arch
        self.ratios = ratios
        names = arch.genes_in_order
        missing = set(names) ^ set(max_widths)
        if missing:
            raise ValueError(f"genes and maximum widths disagree on {sorted(missing)}")
        if not isinstance(depth, bool):
            raise ValueError(f"space depth must be true or false, got {depth!r}")
        self.depth_blocks: dict[str, int] = dict(arch.removable) if depth else {}
        """Depth gene name -> index of its block (empty without depth genes)."""
        if depth and not self.depth_blocks:
            raise ValueError(
                f"space.depth: {family} has no removable block (a residual block with an "
                "identity shortcut) to give a depth gene"
            )
        self.genes: tuple[Gene, ...] = tuple(
            Gene(n, max_widths[n], widths_for(max_widths[n], ratios)) for n in names
        ) + tuple(Gene(n, 1, DEPTH_CHOICES) for n in self.depth_blocks)
        self.gene_index = {g.name: i for i, g in enumerate(self.genes)}
        self._n_choices = np.array([len(g.choices) for g in self.genes], dtype=np.int64)
        self._inner = {d: arch.inner_genes(i) for d, i in self.depth_blocks.items()}

    # -- identity -------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the network input, which the cost model uses."""
        return (self.arch.in_chans, self.arch.input_size, self.arch.input_size)

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of everything that defines the space (family, options, genes, choices)."""
        blob = json.dumps(
            {
                "family": self.family,
                "options": self.options,
                "genes": [(g.name, g.max_channels) for g in self.genes],
                "ratios": self.ratios,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description: family, options and choices (what ``create_space`` needs);
        ``depth`` only when the space has depth genes (descriptions written before they existed
        stay valid)."""
        out = {
            "family": self.family,
            "options": self.options,
            "ratios": list(self.ratios),
            "fingerprint": self.fingerprint,
        }
        return {**out, "depth": True} if self.depth_blocks else out

    def require_widths_only(self, what: str) -> None:
        """Raise :class:`DepthSpaceError` naming ``what`` if this space has depth genes."""
        if self.depth_blocks:
            raise DepthSpaceError(
                f"{what} handles width genes only, but this {self.family} space has "
                f"{len(self.depth_blocks)} depth genes (space.depth=true); use a space without "
                "them (space.depth=false)"
            )

    @cached_property
    def width_space(self) -> ChannelSpace:
        """This space without its depth genes (itself when it has none): the same width genes,
        choices and fingerprint as a space made without ``depth``."""
        if not self.depth_blocks:
            return self
        widths = {g.name: g.max_channels for g in self.genes if g.name not in self.depth_blocks}
        return ChannelSpace(self.family, self.options, self.arch, widths, self.ratios)

    def __len__(self) -> int:
        return len(self.genes)

    def __repr__(self) -> str:
        depth = f" + {len(self.depth_blocks)} depth genes" if self.depth_blocks else ""
        return (
            f"ChannelSpace({self.family}, {len(self.genes) - len(self.depth_blocks)} genes x "
            f"{len(self.ratios)} choices{depth}, input {self.input_shape}, "
            f"fingerprint {self.fingerprint})"
        )

    # -- configs --------------------------------------------------------------------------
    def config(self, indices: Sequence[int]) -> ChannelConfig:
        """A config from one choice index per gene (validated)."""
        raw = list(indices)
        if len(raw) != len(self.genes):
            raise ValueError(
                f"config has {len(raw)} genes but space {self.family} has {len(self.genes)}"
            )
        idx = []
        for g, i in zip(self.genes, raw, strict=True):
            try:
                i = operator.index(i)
            except TypeError:
                raise ValueError(f"gene {g.name!r}: choice index {i!r} is not an integer") from None
            n = len(g.choices)
            if not 0 <= i < n:
                raise ValueError(f"gene {g.name!r}: choice index {i} out of range [0, {n})")
            idx.append(i)
        return ChannelConfig(tuple(idx), self.fingerprint, self)

    def ratio_index(self, ratio: float, nearest: bool = False) -> int:
        """Index of a width ratio among the choices.

        With ``nearest=False`` the ratio must be one of the choices; with ``nearest=True`` the
        closest choice is taken (the paper's ratios hold 0.49 and 0.52, not 0.5).  A ratio outside
        (0, 1], or not a choice when ``nearest`` is false, raises ``ValueError``.
        """
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"width ratio {ratio} is outside (0, 1]")
        dist = [abs(r - ratio) for r in self.ratios]
        best = min(range(len(dist)), key=dist.__getitem__)
        if not nearest and dist[best] > 1e-9:
            raise ValueError(
                f"width ratio {ratio} is not a choice of this space: {list(self.ratios)} "
                "(pass nearest=True to take the closest choice)"
            )
        return best

    def uniform(self, ratio: float, nearest: bool = False) -> ChannelConfig:
        """Every width gene at the same width ratio (the uniform-width baseline), every block
        on; see :meth:`ratio_index` for ``nearest``."""
        i = self.ratio_index(ratio, nearest)
        on = [DEPTH_CHOICES.index(1)] * len(self.depth_blocks)
        return self.config([i] * (len(self.genes) - len(self.depth_blocks)) + on)

    def max(self) -> ChannelConfig:
        """Every gene at its largest choice (every block on): the full network."""
        return self.config(self._n_choices - 1)

    def min(self) -> ChannelConfig:
        """Every gene at its smallest choice (every removable block off)."""
        return self.config([0] * len(self.genes))

    def remove_blocks(self, config: ChannelConfig, genes: Sequence[str]) -> ChannelConfig:
        """``config`` with the blocks of depth genes ``genes`` off, their inner genes at the
        smallest choice (where their width does not matter)."""
        self.check(config)
        idx = list(config.indices)
        for d in genes:
            if d not in self.depth_blocks:
                raise ValueError(f"{d!r} is no depth gene of this space: {list(self.depth_blocks)}")
            for g in (d, *self._inner[d]):
                idx[self.gene_index[g]] = 0
        return self.config(idx)

    def width_config(self, config: ChannelConfig) -> ChannelConfig:
        """The width genes of ``config`` as a config of :attr:`width_space` (all blocks on)."""
        self.check(config)
        return self.width_space.config(config.indices[: len(self.width_space.genes)])

    def removed(self, config: ChannelConfig) -> dict[str, int]:
        """Depth gene -> block index, for the blocks ``config`` switches off."""
        return {
            d: i for d, i in self.depth_blocks.items() if not config.indices[self.gene_index[d]]
        }

    def sample(self, rng: RngLike = None) -> ChannelConfig:
        """A config with each gene's choice drawn uniformly (the paper's structure sampling)."""
        return self.config(as_rng(rng).integers(0, self._n_choices))

    def sample_spread(self, rng: RngLike = None, window: float = 0.25) -> ChannelConfig:
        """A config whose genes are drawn uniformly within ``window`` (a share of the choices)
        around a common level, itself drawn uniformly.  Configs of :meth:`sample` all cost
        close to the mean (a sum of many independent genes); these cover the whole cost range,
        as the configs of a search over several targets do."""
        if not 0.0 <= window <= 1.0:
            raise ValueError(f"sample_spread window must be in [0, 1], got {window}")
        r, n = as_rng(rng), len(self.ratios)
        half = round(window * n / 2)
        level = int(r.integers(0, n))
        lo, hi = np.zeros(len(self.genes), np.int64), self._n_choices - 1  # depth genes: any
        width = slice(0, len(self.genes) - len(self.depth_blocks))
        lo[width], hi[width] = max(0, level - half), min(n - 1, level + half)
        return self.config(r.integers(lo, hi + 1))

    def mutate(self, config: ChannelConfig, p: float, rng: RngLike = None) -> ChannelConfig:
        """Redraw each gene uniformly with probability ``p``."""
        self.check(config)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mutation probability must be in [0, 1], got {p}")
        r = as_rng(rng)
        idx = np.array(config.indices)
        hit = r.random(len(idx)) < p
        idx[hit] = r.integers(0, self._n_choices[hit])
        return self.config(idx)

    def crossover(self, a: ChannelConfig, b: ChannelConfig, rng: RngLike = None) -> ChannelConfig:
        """Uniform crossover: each gene from ``a`` or ``b`` with equal probability."""
        self.check(a)
        self.check(b)
        pick = as_rng(rng).random(len(self.genes)) < 0.5
        return self.config(np.where(pick, a.indices, b.indices))

    def check(self, config: ChannelConfig) -> None:
        """Raise ``ValueError`` unless ``config`` belongs to this space."""
        if not isinstance(config, ChannelConfig):
            raise TypeError(f"expected a ChannelConfig, got {type(config).__name__}")
        if config.fingerprint != self.fingerprint:
            raise ValueError(
                f"config belongs to space {config.fingerprint}, not to this "
                f"{self.family} space {self.fingerprint}"
            )

    def from_json(self, data: str | Mapping[str, Any]) -> ChannelConfig:
        """Inverse of :meth:`ChannelConfig.to_json`; refuses a config of another space."""
        d = json.loads(data) if isinstance(data, str) else dict(data)
        if "genes" not in d:
            raise ValueError("config JSON has no 'genes' field")
        if d.get("space", self.fingerprint) != self.fingerprint:
            raise ValueError(
                f"config JSON belongs to space {d.get('space')} ({d.get('family')}), not to this "
                f"{self.family} space {self.fingerprint}"
            )
        genes = d["genes"]
        if not isinstance(genes, list | tuple):
            raise ValueError(f"config JSON 'genes' must be a list of choice indices, got {genes!r}")
        return self.config(genes)

    def widths(self, config: ChannelConfig) -> dict[str, int]:
        """Gene name -> channel count (a depth gene: 0 or 1 body; an inner gene of a removed
        block: 0)."""
        self.check(config)
        out = {g.name: g.choices[i] for g, i in zip(self.genes, config.indices, strict=True)}
        for d in self.removed(config):
            out.update(dict.fromkeys(self._inner[d], 0))
        return out


@dataclass(frozen=True)
class ChannelConfig:
    """One choice index per gene, bound to its space by the space's fingerprint."""

    indices: tuple[int, ...]
    fingerprint: str
    space: ChannelSpace = field(compare=False, hash=False, repr=False)

    def widths(self) -> dict[str, int]:
        """Gene name -> channel count."""
        return self.space.widths(self)

    def width_tuple(self) -> tuple[int, ...]:
        """Channel counts per gene, in gene order (two configs with equal tuples are one net)."""
        if self.space.depth_blocks:
            return tuple(self.widths().values())
        return tuple(g.choices[i] for g, i in zip(self.space.genes, self.indices, strict=True))

    def channels(self) -> dict[str, tuple[int, int]]:
        """Per-layer (in, out) channel counts, keyed by the layer's module name (the layers of
        removed blocks left out: the network has none)."""
        w, gone = self.widths(), set(self.space.removed(self).values())
        return {
            ly.name: (resolve(ly.cin, w), resolve(ly.cout, w))
            for ly in self.space.arch.layers
            if ly.block not in gone
        }

    def ratios(self) -> tuple[float, ...]:
        """The width ratio of each gene (a space with depth genes has none for those)."""
        self.space.require_widths_only("ChannelConfig.ratios()")
        return tuple(self.space.ratios[i] for i in self.indices)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.fingerprint,
            "family": self.space.family,
            "genes": list(self.indices),
            "widths": self.widths(),
        }

    def __copy__(self) -> ChannelConfig:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ChannelConfig:
        """An immutable value: a deep copy (DEAP's ``clone``) shares it instead of cloning the
        whole space (~30 ms for ResNet-50)."""
        return self

    def __repr__(self) -> str:
        sp = self.space
        if not sp.depth_blocks:
            return f"ChannelConfig({sp.family}, widths={list(self.width_tuple())})"
        widths = list(self.width_tuple()[: len(sp.genes) - len(sp.depth_blocks)])
        return f"ChannelConfig({sp.family}, widths={widths}, removed={list(sp.removed(self))})"
