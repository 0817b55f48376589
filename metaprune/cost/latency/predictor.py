"""The latency predictor: a config's latency from the table entries of its layers.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3) predicts a candidate's latency as the sum of
its layers' table entries.  :class:`LatencyModel` adds a correction fitted by least squares on a
few whole networks spread over the latency range (:func:`fit_configs`, :func:`fit_overhead`):
``scale * sum + offset`` (``mode='linear'``, the default) or the sum plus a fixed overhead for
what the layers do not cover -- pooling, residual additions, dispatch between layers
(``mode='sum'``).

Departures from the paper: the fitted correction (the plain sum underestimates whole networks),
and entries a table lacks are measured on demand when the table belongs to this machine,
otherwise named in a :class:`~metaprune.cost.latency.table.MissingEntryError` -- never treated
as zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.cost.latency.table import (
    EntryKey,
    LatencyTable,
    LatencyTableError,
    MissingEntryError,
    layer_acts,
    layer_key,
    needed_entries,
)
from metaprune.space import ChannelConfig, ChannelSpace

MODES = ("linear", "sum")


def fit_overhead(
    table: LatencyTable,
    space: ChannelSpace,
    configs: Sequence[ChannelConfig],
    measured: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit the overhead and the linear correction on ``configs`` measured end to end.

    ``sum`` mode: ``latency = sum(entries) + overhead_ms`` (mean residual).  ``linear`` mode:
    ``latency = scale * sum(entries) + offset`` (least squares).  Stored in ``table.fit``.
    ``measured``: their end-to-end latencies if already measured, else they are measured here.
    """
    if len(configs) < 2:
        raise ValueError(f"need at least 2 networks to fit the overhead, got {len(configs)}")
    sums = LatencyModel(table, space, fitted=False).layer_sum_many(configs)
    if measured is None:
        measured = table.measure_networks(space, configs)
    design = np.stack([sums, np.ones_like(sums)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, measured, rcond=None)
    table.fit = {
        "mode": "linear",
        "overhead_ms": float(np.mean(measured - sums)),
        "scale": float(scale),
        "offset": float(offset),
        "nets": [
            {"genes": list(c.indices), "measured_ms": float(m), "sum_ms": float(s)}
            for c, m, s in zip(configs, measured, sums, strict=True)
        ],
    }
    return table.fit


class LatencyModel:
    """Predicted latency (ms) of the configs of one space from a :class:`LatencyTable`.

    ``mode='linear'``: ``scale * sum + offset``; ``mode='sum'``: ``sum + overhead_ms``, where
    ``sum`` adds the table entries of every layer of the config; ``None``: the table's default
    (``linear``, the better of the two in BENCHMARKS.md).  Vectorised over configs: one gather
    and one sum over a flat array of all layers' (in width, out width) latencies.
    """

    def __init__(
        self,
        table: LatencyTable,
        space: ChannelSpace,
        mode: str | None = None,
        *,
        measure_missing: bool = True,
        fitted: bool = True,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown latency mode {mode!r}; choose one of {list(MODES)}")
        table.check(space, device=table.device)
        if fitted and not {"overhead_ms", "scale", "offset"} <= set(table.fit):
            raise LatencyTableError(
                "latency table has no fitted overhead (it was not built to completion); "
                "rebuild it with build_latency_table"
            )
        self.table, self.space, self.mode = table, space, mode
        self.measured_missing = self._fill_missing(measure_missing)
        n_genes = len(space.genes)
        flat: list[np.ndarray] = []
        base, in_col, out_col, out_stride = [], [], [], []
        for layer, act in zip(space.arch.layers, layer_acts(space), strict=True):
            cin_dim = None if layer.depthwise else layer.cin
            ins = _choice_widths(space, cin_dim)
            outs = _choice_widths(space, layer.cout)
            grid = np.array(
                [[table.entries[layer_key(layer, act, ci or co, co)] for co in outs] for ci in ins]
            )
            base.append(sum(a.size for a in flat))
            flat.append(grid.ravel())
            in_col.append(space.gene_index[cin_dim] if isinstance(cin_dim, str) else n_genes)
            out_col.append(space.gene_index[layer.cout] if isinstance(layer.cout, str) else n_genes)
            out_stride.append(len(outs))
        self._flat = np.concatenate(flat)
        self._base, self._stride = np.array(base), np.array(out_stride)
        self._in_col, self._out_col = np.array(in_col), np.array(out_col)

    def _fill_missing(self, measure: bool) -> int:
        need: dict[EntryKey, str] = {}
        for key, name in needed_entries(self.space).items():
            if key not in self.table.entries:
                need[key] = name
        if not need:
            return 0
        if measure and self.table.is_local():
            self.table.measure(need)
            return len(need)
        shown = ", ".join(f"{n} ({k.cin}->{k.cout})" for k, n in list(need.items())[:5])
        why = "" if measure else " (measuring disabled)"
        raise MissingEntryError(
            f"latency table lacks {len(need)} entr{'y' if len(need) == 1 else 'ies'} the space "
            f"needs, e.g. {shown}; they cannot be measured here{why}: the table is for "
            f"{self.table.device} / {self.table.runtime}"
        )

    def _indices(self, configs: Sequence[ChannelConfig]) -> np.ndarray:
        for c in configs:
            self.space.check(c)
        idx = np.array([c.indices for c in configs], dtype=np.int64).reshape(len(configs), -1)
        return np.concatenate([idx, np.zeros((len(configs), 1), dtype=np.int64)], axis=1)

    def layer_sum_many(self, configs: Sequence[ChannelConfig]) -> np.ndarray:
        """Sum of the table entries of every layer of each config (ms), without overhead."""
        idx = self._indices(configs)
        flat_idx = self._base + idx[:, self._in_col] * self._stride + idx[:, self._out_col]
        return self._flat[flat_idx].sum(axis=1)

    def predict_many(self, configs: Sequence[ChannelConfig], mode: str | None = None) -> np.ndarray:
        """Predicted latency (ms) of each config."""
        mode = mode or self.mode or self.table.fit.get("mode", "sum")
        s = self.layer_sum_many(configs)
        fit = self.table.fit
        if mode == "sum":
            return s + fit["overhead_ms"]
        if mode == "linear":
            return fit["scale"] * s + fit["offset"]
        raise ValueError(f"unknown latency mode {mode!r}; choose one of {list(MODES)}")

    def predict(self, config: ChannelConfig) -> float:
        """Predicted latency (ms) of ``config``."""
        return float(self.predict_many([config])[0])

    __call__ = predict


def _choice_widths(space: ChannelSpace, dim: str | int | None) -> tuple[int | None, ...]:
    """Width of each choice index of ``dim`` (one entry for a fixed dim; ``None``: unused)."""
    if isinstance(dim, str):
        return space.genes[space.gene_index[dim]].choices
    return (dim,)


def fit_configs(space: ChannelSpace, n: int = 10, seed: int = 1234) -> list[ChannelConfig]:
    """The networks the overhead is fitted on: smallest, largest, half width, then random
    configs spread over the whole latency range (:meth:`ChannelSpace.sample_spread`), so the
    linear correction is fitted over every size a search may visit."""
    base = [space.min(), space.max()]
    mid = len(space.ratios) // 2
    base.append(space.config([mid] * len(space.genes)))
    rng = np.random.default_rng(seed)
    return (base + [space.sample_spread(rng) for _ in range(max(0, n - len(base)))])[:n]


def load_latency_model(
    path: str | Path,
    space: ChannelSpace,
    device: str | None = None,
    runtime: str | None = None,
    *,
    mode: str | None = None,
    measure_missing: bool = True,
) -> LatencyModel:
    """Load a table and return its predictor for ``space``.

    Refuses (:class:`TableMismatchError`) a table of another space, runtime (when ``runtime`` is
    given) or device (see :meth:`LatencyTable.check`).  Entries the table lacks are measured
    here when it belongs to this machine (and saved back to ``path``), else
    :class:`MissingEntryError` names them.
    """
    table = LatencyTable.load(path)
    table.check(space, device, runtime)
    model = LatencyModel(table, space, mode, measure_missing=measure_missing)
    if model.measured_missing:
        table.save(path)
    return model
