"""A Channel-Bench-Macro results file: every network of a space trained alone, three seeds.

The file (Su et al., BCNet, CVPR 2021; ``Results_MobileNet.json``) maps each benchmark key
(:mod:`metaprune.benchmarks.keys`) to ``{"acc": [a1, a2, a3], "mean": m, "std": s, "flops": F,
"params": P}``: test accuracies in percent on CIFAR-10, multiply-accumulates at 32x32 input and
the parameter count.  MetaPruning (Liu et al., ICCV 2019, sec. 4) judges a searched network by
retraining it; here it is looked up.  The path always comes from the caller (config or command
line): the project ships only a small test fixture, never the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.benchmarks.keys import DIGITS, check_benchmark_space, key_config
from metaprune.cost import cost_model
from metaprune.io import read_json
from metaprune.space import ChannelConfig, ChannelSpace


class BenchmarkFileError(ValueError):
    """A results file that is missing, corrupt, or whose entries lack or mistype a field."""


@dataclass(frozen=True)
class BenchmarkResults:
    """The entries of one results file as arrays (row ``i`` is ``keys[i]``)."""

    source: str
    keys: tuple[str, ...]
    acc: np.ndarray  # (N, seeds), percent
    mean: np.ndarray  # (N,), percent
    flops: np.ndarray  # (N,), int64 MACs
    params: np.ndarray  # (N,), int64
    row: dict[str, int] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> BenchmarkResults:
        """Results from the parsed file; a malformed entry raises :class:`BenchmarkFileError`
        naming ``source`` and the key."""
        if not isinstance(data, Mapping) or not data:
            raise BenchmarkFileError(
                f"benchmark results {source} must be a non-empty JSON object of key -> entry"
            )
        keys, acc, mean, flops, params = [], [], [], [], []
        for key, e in data.items():
            try:
                a = [float(v) for v in e["acc"]]
                m, f, p = float(e["mean"]), e["flops"], e["params"]
                if not a or not (isinstance(f, int) and isinstance(p, int)):
                    raise TypeError("acc must be a non-empty list, flops and params integers")
            except (KeyError, TypeError, ValueError) as err:
                raise BenchmarkFileError(
                    f"benchmark results {source}: entry {key!r} is malformed ({err!r}); each "
                    "entry needs acc (list), mean, flops and params"
                ) from None
            if acc and len(a) != len(acc[0]):
                raise BenchmarkFileError(
                    f"benchmark results {source}: entry {key!r} has {len(a)} seeds, "
                    f"others {len(acc[0])}"
                )
            keys.append(str(key))
            acc.append(a)
            mean.append(m)
            flops.append(f)
            params.append(p)
        return cls(
            source,
            tuple(keys),
            np.array(acc, dtype=np.float64),
            np.array(mean, dtype=np.float64),
            np.array(flops, dtype=np.int64),
            np.array(params, dtype=np.int64),
            {k: i for i, k in enumerate(keys)},
        )

    @property
    def seeds(self) -> int:
        """Number of training seeds per entry."""
        return self.acc.shape[1]

    def __len__(self) -> int:
        return len(self.keys)

    def configs(self, space: ChannelSpace) -> dict[str, ChannelConfig]:
        """Key -> config of every entry that is a network of ``space`` (all of them for the
        full space; those of its choices for a subspace)."""
        check_benchmark_space(space)
        digits = {DIGITS[r] for r in space.ratios}
        return {
            k: key_config(space, k)
            for k in self.keys
            if len(k) == len(space.genes) and set(k) <= digits
        }

    def cost_mismatches(self, space: ChannelSpace) -> list[dict[str, Any]]:
        """Entries of ``space`` whose file ``flops`` / ``params`` differ from the space's exact
        counts (:mod:`metaprune.cost.flops`): ``{"key", "cost", "file", "counted"}`` each."""
        found = self.configs(space)
        if not found:
            return []
        rows = np.array([self.row[k] for k in found])
        cm, configs = cost_model(space), list(found.values())
        out = []
        for cost, counted in (
            ("flops", cm.flops_many(configs)),
            ("params", cm.params_many(configs)),
        ):
            stored = getattr(self, cost)[rows]
            for i in np.flatnonzero(stored != counted):
                key = self.keys[rows[i]]
                out.append(
                    {"key": key, "cost": cost, "file": int(stored[i]), "counted": int(counted[i])}
                )
        return out


def load_results(path: str | os.PathLike) -> BenchmarkResults:
    """Read a results file; a missing, corrupt or malformed one raises
    :class:`BenchmarkFileError` naming it."""
    data = read_json(path, "benchmark results", BenchmarkFileError)
    return BenchmarkResults.from_dict(data, str(Path(path)))
