"""Cost constraints of the search: parsing, resolution against the space, feasibility.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) rejects every candidate that violates the FLOPs
constraint and redraws it; for ResNet-50 the paper searched inside a band (1950-2050 MFLOPs).
Here a constraint bounds any named cost (``flops``, ``params``, ``latency``) from above and
optionally from below.

How a bound value is read (no form means two things):

* ``"50%"`` and ``"0.5x"`` are a *fraction of the maximum configuration's cost*, for any cost;
* ``"300M"``, ``"1.2G"``, ``"45k"`` (or a plain ``3e8``) are absolute FLOPs (MACs) or
  parameters; ``"2.5ms"`` is an absolute latency;
* a bare number ``0 < v <= 1`` is a fraction, a larger one absolute, for ``flops`` and
  ``params`` only (``0.5`` = half the FLOPs of the unpruned network): no network has a single
  MAC or parameter, so the reading is unambiguous;
* a latency bound needs its unit (``"2.5ms"``) or an explicit fraction (``"50%"``, ``"0.5x"``):
  a bare number could mean milliseconds or a fraction, and is a :class:`BoundSyntaxError`, as is
  ``ms`` on FLOPs or parameters and an SI suffix on a latency;
* a caller's own cost function (another name) reads a bare number as absolute.

A constraint value is one bound (the upper one) or a pair ``[lower, upper]`` where either side
may be null.  A constraint that no configuration can meet is reported before anything is scored,
naming the smallest (or largest) reachable value: costs grow with every width, so the minimal
(maximal) configuration reaches the extreme.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaprune.cost.proposal import CostFn
from metaprune.space import ChannelConfig, ChannelSpace

_SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|x|ms|[kKMGT])?\s*$")


def cost_values(
    costs: Mapping[str, CostFn], configs: Sequence[ChannelConfig]
) -> dict[str, np.ndarray]:
    """Every cost of every config: name -> float array.  No cost function is asked about an
    empty list (a latency model cannot shape one); its arrays are empty."""
    if not configs:
        return {name: np.zeros(0) for name in costs}
    return {name: np.asarray(fn(configs), dtype=np.float64) for name, fn in costs.items()}


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


COUNT_COSTS = ("flops", "params")
"""Costs counted in units (MACs, parameters): SI suffixes, and a bare number <= 1 a fraction."""
TIME_COSTS = ("latency",)
"""Costs in milliseconds: an absolute bound needs ``ms``."""


class BoundSyntaxError(ValueError):
    """A bound value that cannot be read, or could be read two ways, for its cost."""


def _forms(cost: str) -> str:
    """The accepted forms of a bound on ``cost``, for error messages."""
    if cost in TIME_COSTS:
        return "'2.5ms' (absolute) or '50%' / '0.5x' (fraction of the max config)"
    return "'50%' or '0.5x' (fraction of the max config), or 3e8, '300M', '1.2G' (absolute)" + (
        "; a bare number <= 1 is a fraction" if cost in COUNT_COSTS else ""
    )


def parse_value(cost: str, value: Any, max_cost: float, what: str) -> float | None:
    """Absolute value of one bound on ``cost`` (the forms: module docstring); ``None`` stays.

    A bound of another cost than those named in :data:`COUNT_COSTS` / :data:`TIME_COSTS` (a
    caller's own cost function) reads a bare number as absolute.  Bad input raises
    :class:`BoundSyntaxError` naming the accepted forms."""
    if value is None:
        return None
    if isinstance(value, str) and (m := _NUMBER.match(value)):
        v, unit = float(m.group(1)), m.group(2)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        v, unit = float(value), None
    else:
        raise BoundSyntaxError(f"{what}: cannot read bound {value!r}; use {_forms(cost)}")
    if not math.isfinite(v) or v <= 0:
        raise BoundSyntaxError(f"{what}: bound must be positive and finite, got {value!r}")
    timed = cost in TIME_COSTS
    if unit in ("%", "x"):
        return v * max_cost / (100.0 if unit == "%" else 1.0)
    if unit == "ms" and not timed:
        raise BoundSyntaxError(f"{what}: 'ms' is a latency unit; use {_forms(cost)}")
    if unit in _SI and timed:
        raise BoundSyntaxError(f"{what}: {unit!r} is not a latency unit; use {_forms(cost)}")
    if unit is None and timed:
        raise BoundSyntaxError(
            f"{what}: a bare number is ambiguous for {cost} (milliseconds or a fraction?); "
            f"use {_forms(cost)}"
        )
    if unit is None:
        return v * max_cost if cost in COUNT_COSTS and v <= 1.0 else v
    return v * _SI[unit] if unit in _SI else v


def parse_bound(cost: str, spec: Any, max_cost: float, what: str) -> Bound:
    """A :class:`Bound` from ``spec``: one upper bound, or a ``[lower, upper]`` pair."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 2:
            raise ValueError(f"{what}: a range must be [lower, upper], got {list(spec)}")
        lo = parse_value(cost, spec[0], max_cost, what)
        hi = parse_value(cost, spec[1], max_cost, what)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{what}: lower bound {lo:.6g} exceeds upper bound {hi:.6g}")
        return Bound(cost, lo, hi)
    return Bound(cost, None, parse_value(cost, spec, max_cost, what))


def check_bound_syntax(cost: str, spec: Any, what: str) -> None:
    """Raise :class:`BoundSyntaxError` (or ``ValueError`` for a malformed range) if ``spec``
    cannot be read as a bound on ``cost``; feasibility needs the space and is checked when the
    search starts.  What the start-up check of a config runs, before any stage."""
    sides = spec if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    if len(sides) not in (1, 2) or (len(sides) == 1 and sides is spec):
        raise ValueError(f"{what}: a range must be [lower, upper], got {list(spec)}")
    for value in sides:
        parse_value(cost, value, 1.0, what)


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
        """Every cost of every config: name -> array (:func:`cost_values`)."""
        return cost_values(self.costs, configs)

    @staticmethod
    def satisfied(values: Mapping[str, np.ndarray], bounds: Sequence[Bound]) -> np.ndarray:
        """Mask of the configs (by their cost ``values``) that meet every bound."""
        n = len(next(iter(values.values()))) if values else 0
        ok = np.ones(n, dtype=bool)
        for b in bounds:
            ok &= b.mask(np.asarray(values[b.cost], dtype=np.float64))
        return ok
