"""The measured latency look-up table: one entry per distinct layer geometry and width pair.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3) looks up the latency of every layer of a
candidate in a table measured on the target device and sums.  :class:`LatencyTable` is that table
for one space on one device, runtime, batch size and thread count: every prunable layer of
``space.arch.layers`` timed alone (conv -> BN -> activation exactly as in
:class:`~metaprune.models.pruned.PrunedNet`, or the classifier ``Linear``) at every (in, out)
width pair the space can produce (depthwise convs: one width), with :mod:`.timing`.

Departures from the paper (whose table was never released): entries are keyed by layer geometry
(:class:`EntryKey`: kind, kernel, stride, depthwise, input size, widths, activation) rather than
by layer index, so equal layers are measured once, and every width pair is timed (no
interpolation).  A table measured on another device, runtime, batch size or space is refused with
:class:`TableMismatchError` naming the mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune.arch import Conv, Layer
from metaprune.cost.latency.timing import (
    TIMING,
    device_name,
    make_runner,
    time_runners,
    torch_threads,
)
from metaprune.io import atomic_write_json, read_json
from metaprune.models.pruned import conv_bn
from metaprune.models.registry import build_pruned
from metaprune.space import ChannelConfig, ChannelSpace

FORMAT = "metaprune-latency/1"


class LatencyTableError(ValueError):
    """A latency table cannot serve the request (base class)."""


class TableMismatchError(LatencyTableError):
    """The table was measured for another device, runtime, batch size or space."""

    def __init__(self, what: str, table: Any, wanted: Any) -> None:
        super().__init__(
            f"latency table {what} mismatch: the table was measured for {what} {table!r}, "
            f"but {wanted!r} was requested"
        )
        self.what, self.table, self.wanted = what, table, wanted


class MissingEntryError(LatencyTableError):
    """The table lacks entries the space needs and they cannot be measured here."""


# -- entries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryKey:
    """The geometry of one timed layer; layers with equal keys share one table entry."""

    kind: str  # "conv" or "linear"
    kernel: int
    stride: int
    depthwise: bool
    in_hw: tuple[int, int]
    cin: int
    cout: int
    act: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EntryKey:
        return cls(
            str(d["kind"]),
            int(d["kernel"]),
            int(d["stride"]),
            bool(d["depthwise"]),
            (int(d["in_hw"][0]), int(d["in_hw"][1])),
            int(d["cin"]),
            int(d["cout"]),
            bool(d["act"]),
        )

    def module(self, act_kind: str) -> nn.Module:
        """The layer as :class:`~metaprune.models.pruned.PrunedNet` builds it, in eval mode."""
        if self.kind == "linear":
            return nn.Linear(self.cin, self.cout).eval()
        conv = Conv(self.cin, self.cout, self.kernel, self.stride, self.depthwise, self.act)
        return conv_bn(conv, {}, act_kind).eval()

    def example(self, batch: int) -> torch.Tensor:
        """A random input of the layer's shape (batch first)."""
        if self.kind == "linear":
            return torch.randn(batch, self.cin)
        return torch.randn(batch, self.cin, *self.in_hw)


def _conv_of(space: ChannelSpace, layer: Layer) -> Conv | None:
    """The :class:`Conv` spec behind a conv layer (``features.i.body.j`` / ``features.i.shortcut``)."""
    if layer.kind != "conv":
        return None
    parts = layer.name.split(".")
    block = space.arch.blocks[int(parts[1])]
    return block.shortcut if parts[2] == "shortcut" else block.body[int(parts[3])]


def _dim_widths(space: ChannelSpace, dim: str | int) -> tuple[int, ...]:
    return space.genes[space.gene_index[dim]].unique_widths if isinstance(dim, str) else (dim,)


def layer_key(layer: Layer, act: bool, cin: int, cout: int) -> EntryKey:
    """The entry of ``layer`` (ending in an activation when ``act``) at widths ``cin -> cout``."""
    return EntryKey(
        layer.kind, layer.kernel, layer.stride, layer.depthwise, layer.in_hw, cin, cout, act
    )


def layer_acts(space: ChannelSpace) -> list[bool]:
    """Whether each layer of ``space.arch.layers`` ends in an activation."""
    return [bool(c.act) if (c := _conv_of(space, ly)) else False for ly in space.arch.layers]


def required_keys(space: ChannelSpace) -> list[EntryKey]:
    """Every distinct entry the configs of ``space`` can need, in layer order."""
    return list(needed_entries(space))


def needed_entries(space: ChannelSpace) -> dict[EntryKey, str]:
    """Every needed entry and the name of the first layer needing it."""
    space.require_widths_only("a latency table")
    out: dict[EntryKey, str] = {}
    for layer, act in zip(space.arch.layers, layer_acts(space), strict=True):
        couts = _dim_widths(space, layer.cout)
        if layer.depthwise:
            pairs = [(c, c) for c in couts]
        else:
            pairs = [(ci, co) for ci in _dim_widths(space, layer.cin) for co in couts]
        for ci, co in pairs:
            out.setdefault(layer_key(layer, act, ci, co), layer.name)
    return out


@dataclass
class LatencyTable:
    """Measured layer latencies (ms) of one space on one device and runtime, with its fit."""

    space: str  # fingerprint
    family: str
    space_desc: dict[str, Any]
    device_type: str
    device: str  # device name (GPU name or CPU model)
    runtime: str
    batch: int
    threads: int
    input_shape: tuple[int, int, int]
    act: str
    channels_last: bool = False
    timing: dict[str, Any] = field(default_factory=lambda: dict(TIMING))
    versions: dict[str, str] = field(default_factory=dict)
    entries: dict[EntryKey, float] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    complete: bool = False

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "space": self.space,
            "family": self.family,
            "space_desc": self.space_desc,
            "device_type": self.device_type,
            "device": self.device,
            "runtime": self.runtime,
            "batch": self.batch,
            "threads": self.threads,
            "input_shape": list(self.input_shape),
            "act": self.act,
            "channels_last": self.channels_last,
            "timing": self.timing,
            "versions": self.versions,
            "build_seconds": self.build_seconds,
            "complete": self.complete,
            "fit": self.fit,
            "entries": [{**k.to_dict(), "ms": ms} for k, ms in self.entries.items()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        if d.get("format") != FORMAT:
            raise LatencyTableError(
                f"not a latency table of format {FORMAT!r} (found {d.get('format')!r})"
            )
        try:
            entries = {EntryKey.from_dict(e): float(e["ms"]) for e in d["entries"]}
            return cls(
                space=d["space"],
                family=d["family"],
                space_desc=dict(d["space_desc"]),
                device_type=d["device_type"],
                device=d["device"],
                runtime=d["runtime"],
                batch=int(d["batch"]),
                threads=int(d["threads"]),
                input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
                act=d["act"],
                channels_last=bool(d["channels_last"]),
                timing=dict(d["timing"]),
                versions=dict(d["versions"]),
                entries=entries,
                fit=dict(d["fit"]),
                build_seconds=float(d["build_seconds"]),
                complete=bool(d["complete"]),
            )
        except (KeyError, TypeError, IndexError) as e:
            raise LatencyTableError(f"malformed latency table: missing or bad field {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        return cls.from_dict(read_json(path, "latency table", LatencyTableError))

    # -- identity checks --------------------------------------------------------------------
    def check(
        self,
        space: ChannelSpace,
        device: str | None = None,
        runtime: str | None = None,
        batch: int | None = None,
    ) -> None:
        """Raise :class:`TableMismatchError` unless the table serves this request.

        ``device``: ``None`` / ``"cpu"`` / ``"cuda[:i]"`` mean this machine's device of that type
        (``None``: of the table's type), whose name must equal the table's; any other string is
        a device name that must equal the table's (to use a table measured elsewhere on purpose).
        ``runtime`` and ``batch``: ``None`` accepts the table's.
        """
        if self.space != space.fingerprint:
            raise TableMismatchError(
                "space",
                f"{self.family} {self.space}",
                f"{space.family} {space.fingerprint}",
            )
        if runtime is not None and runtime != self.runtime:
            raise TableMismatchError("runtime", self.runtime, runtime)
        if batch is not None and batch != self.batch:
            raise TableMismatchError("batch size", self.batch, batch)
        wanted = self.device_type if device is None else device
        if wanted in ("cpu", "cuda") or str(wanted).startswith("cuda:"):
            if torch.device(wanted).type != self.device_type:
                raise TableMismatchError("device type", self.device_type, torch.device(wanted).type)
            if torch.device(wanted).type == "cuda" and not torch.cuda.is_available():
                raise TableMismatchError("device", self.device, "cuda (not available here)")
            wanted = device_name(wanted)
        if wanted != self.device:
            raise TableMismatchError("device", self.device, wanted)

    def is_local(self) -> bool:
        """Whether this machine can measure entries for the table (same device and runtime)."""
        try:
            self.check_device_here()
        except TableMismatchError:
            return False
        return True

    def check_device_here(self) -> None:
        """Raise :class:`TableMismatchError` unless the table's device is on this machine."""
        if self.device_type == "cuda" and not torch.cuda.is_available():
            raise TableMismatchError("device", self.device, "no CUDA device here")
        here = device_name(self.device_type)
        if here != self.device:
            raise TableMismatchError("device", self.device, here)

    # -- measuring --------------------------------------------------------------------------
    def measure(
        self,
        keys: Iterable[EntryKey],
        *,
        chunk: int = 256,
        on_chunk: Callable[[LatencyTable, int, int], None] | None = None,
    ) -> None:
        """Time ``keys`` on this machine and add them (interleaved within chunks of ``chunk``)."""
        self.check_device_here()
        todo = [k for k in dict.fromkeys(keys) if k not in self.entries]
        torch.manual_seed(0)
        with torch_threads(self.threads):
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                runners = [
                    make_runner(
                        k.module(self.act),
                        k.example(self.batch),
                        device=self.device_type,
                        runtime=self.runtime,
                        channels_last=self.channels_last,
                        threads=self.threads,
                    )
                    for k in part
                ]
                ms = time_runners(runners, device=self.device_type, **self.timing)
                self.entries.update(zip(part, (float(v) for v in ms), strict=True))
                if on_chunk is not None:
                    on_chunk(self, start + len(part), len(todo))

    def measure_networks(
        self, space: ChannelSpace, configs: Sequence[ChannelConfig], rounds: int | None = None
    ) -> np.ndarray:
        """End-to-end median ms of ``build_pruned(space, c)`` for each config (interleaved)."""
        self.check(space, device=self.device)
        self.check_device_here()
        torch.manual_seed(0)
        x = torch.randn(self.batch, *space.input_shape)
        timing = dict(self.timing)
        if rounds is not None:
            timing["rounds"] = rounds
        with torch_threads(self.threads):
            runners = [
                make_runner(
                    build_pruned(space, c),
                    x,
                    device=self.device_type,
                    runtime=self.runtime,
                    channels_last=self.channels_last,
                    threads=self.threads,
                )
                for c in configs
            ]
            return time_runners(runners, device=self.device_type, **timing)
