"""Cost constraints of the search: parsing, resolution against the space, feasibility.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) rejects every candidate that violates the FLOPs
constraint and redraws it; for ResNet-50 the paper searched inside a band (1950-2050 MFLOPs).
Here a constraint bounds any named cost (``flops``, ``params``, ``latency``) from above and
optionally from below.

The rule for a bound value, one for every cost:

* a number ``0 < v <= 1`` is a *fraction of the maximum configuration's cost* (``0.5`` = half the
  FLOPs of the unpruned network);
* a number ``v > 1`` is an *absolute* value (MACs, parameters, milliseconds);
* a string is explicit: ``"50%"`` is a fraction, ``"300M"``, ``"1.2G"``, ``"45k"`` are absolute
  with an SI suffix, ``"0.8ms"`` is an absolute latency (the way to write absolute values <= 1).

A constraint value is one bound (the upper one) or a pair ``[lower, upper]`` where either side
may be null.  A constraint that no configuration can meet is reported before anything is scored,
naming the smallest (or largest) reachable value: costs grow with every width, so the minimal
(maximal) configuration reaches the extreme.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaprune.space import ChannelConfig, ChannelSpace

CostFn = Callable[[Sequence[ChannelConfig]], np.ndarray]
"""Cost of each of a list of configs, as an array (FLOPs, params, latency ...)."""

_SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|ms|[kKMGT])?\s*$")


class InfeasibleConstraintError(ValueError):
    """A constraint (or target) that no configuration of the space can meet."""


@dataclass(frozen=True)
class Bound:
    """``lower <= cost <= upper`` for one named cost, in absolute units (either side optional)."""

    cost: str
    lower: float | None = None
    upper: float | None = None

    def mask(self, values: np.ndarray) -> np.ndarray:
        ok = np.ones(values.shape, dtype=bool)
        if self.lower is not None:
            ok &= values >= self.lower
        if self.upper is not None:
            ok &= values <= self.upper
        return ok

    def describe(self) -> str:
        lo = "-inf" if self.lower is None else f"{self.lower:.6g}"
        hi = "inf" if self.upper is None else f"{self.upper:.6g}"
        return f"{self.cost} in [{lo}, {hi}]"


def parse_value(value: Any, max_cost: float, what: str) -> float | None:
    """Absolute value of one bound (see the module docstring for the rule); ``None`` stays."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: bound must be a number or a string like '50%', got {value!r}")
    if isinstance(value, int | float):
        v = float(value)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{what}: bound must be positive and finite, got {value!r}")
        return v * max_cost if v <= 1.0 else v
    if isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise ValueError(
                f"{what}: cannot parse bound {value!r}; use a fraction like 0.5 or '50%', or an "
                "absolute value like 3e8, '300M', '0.8ms'"
            )
        v, unit = float(m.group(1)), m.group(2)
        if v <= 0:
            raise ValueError(f"{what}: bound must be positive, got {value!r}")
        if unit == "%":
            return v / 100.0 * max_cost
        return v * _SI.get(unit, 1.0) if unit else (v * max_cost if v <= 1.0 else v)
    raise ValueError(f"{what}: bound must be a number or a string, got {type(value).__name__}")


def parse_bound(cost: str, spec: Any, max_cost: float, what: str) -> Bound:
    """A :class:`Bound` from ``spec``: one upper bound, or a ``[lower, upper]`` pair."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 2:
            raise ValueError(f"{what}: a range must be [lower, upper], got {list(spec)}")
        lo = parse_value(spec[0], max_cost, what)
        hi = parse_value(spec[1], max_cost, what)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{what}: lower bound {lo:.6g} exceeds upper bound {hi:.6g}")
        return Bound(cost, lo, hi)
    return Bound(cost, None, parse_value(spec, max_cost, what))


class Constraints:
    """Resolves constraint specs against a space and its cost functions, and checks configs.

    ``costs`` maps a cost name to a function of a list of configs (see :data:`CostFn`); a
    constraint on a cost that is not available (e.g. ``latency`` without a latency table) is an
    error naming the available ones.
    """

    def __init__(self, space: ChannelSpace, costs: Mapping[str, CostFn]) -> None:
        self.space = space
        self.costs = dict(costs)
        ends = [space.min(), space.max()]
        self.min_cost: dict[str, float] = {}
        self.max_cost: dict[str, float] = {}
        for name, fn in self.costs.items():
            lo, hi = (float(v) for v in fn(ends))
            self.min_cost[name], self.max_cost[name] = lo, hi

    def resolve(self, spec: Mapping[str, Any] | None, what: str = "constraint") -> list[Bound]:
        """Bounds from ``{cost: value or [lower, upper]}``, checked for feasibility."""
        bounds = []
        for name, value in (spec or {}).items():
            if name not in self.costs:
                raise ValueError(
                    f"{what} on unknown cost {name!r}; available: {sorted(self.costs)}"
                    + (" (latency needs search.latency_table)" if name == "latency" else "")
                )
            bound = parse_bound(name, value, self.max_cost[name], f"{what} {name}={value!r}")
            self.check_feasible(bound, f"{what} {name}={value!r}")
            bounds.append(bound)
        return bounds

    def check_feasible(self, bound: Bound, what: str) -> None:
        """Raise :class:`InfeasibleConstraintError` if no config of the space meets ``bound``."""
        lo, hi = self.min_cost[bound.cost], self.max_cost[bound.cost]
        if bound.upper is not None and bound.upper < lo:
            raise InfeasibleConstraintError(
                f"{what}: no configuration of the space meets {bound.cost} <= {bound.upper:.6g}; "
                f"the smallest reachable {bound.cost} is {lo:.6g} "
                f"({lo / hi:.4f} of the maximum {hi:.6g})"
            )
        if bound.lower is not None and bound.lower > hi:
            raise InfeasibleConstraintError(
                f"{what}: no configuration of the space meets {bound.cost} >= {bound.lower:.6g}; "
                f"the largest reachable {bound.cost} is {hi:.6g}"
            )

    def evaluate(self, configs: Sequence[ChannelConfig]) -> dict[str, np.ndarray]:
        """Every cost of every config: name -> array."""
        return {name: np.asarray(fn(configs), dtype=np.float64) for name, fn in self.costs.items()}

    @staticmethod
    def satisfied(values: Mapping[str, np.ndarray], bounds: Sequence[Bound]) -> np.ndarray:
        """Mask of the configs (by their cost ``values``) that meet every bound."""
        n = len(next(iter(values.values()))) if values else 0
        ok = np.ones(n, dtype=bool)
        for b in bounds:
            ok &= b.mask(np.asarray(values[b.cost], dtype=np.float64))
        return ok
