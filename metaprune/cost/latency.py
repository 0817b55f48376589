"""Measured latency look-up tables (LUT) and a validated latency predictor.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 and 4.3) searches pruned networks under latency
constraints by looking up the latency of every layer in a table measured on the target device and
summing; the table was never released.  Here the table is measured on the machine at hand:

* **Build** (:func:`build_latency_table`): every prunable layer of ``space.arch.layers`` is timed
  alone (conv -> BN -> activation exactly as in :class:`~metaprune.models.pruned.PrunedNet`, or the
  classifier ``Linear``) at every (in, out) width pair the space can produce (depthwise convs: one
  width).  Layers with equal geometry (kind, kernel, stride, depthwise, input size, widths,
  activation) share one entry, which is what makes a 31-choice MobileNetV2 table build in minutes.
  Timing: warm-up, then interleaved rounds under ``torch.inference_mode``, each runner's turn
  opened by an untimed call (``settle``) so the timed call sees its weights in cache, the median
  per call; CUDA events on GPU; optionally ONNX Runtime sessions instead of eager torch.
* **Predict** (:class:`LatencyModel`): a linear correction ``scale * sum + offset`` of the sum
  of a config's layer entries (the default, ``mode='linear'``), or the sum plus a fixed overhead
  (pooling, residual additions, Python dispatch between layers; ``mode='sum'``), both fitted by
  least squares on a few whole networks spread over the latency range.  Both are reported by
  ``metaprune latency validate``, which can refit them in its own measurement window
  (``--refit``): a machine's speed drifts by several per cent over minutes.
* **Clock**: wall clock by default; ``clock='cpu'`` (one CPU thread) reads the thread's CPU
  time, so that preemption by other jobs on a shared machine is not counted as latency.

Departures from the paper: the table is keyed by layer geometry rather than by layer index (equal
layers are measured once), and the predictor includes the fitted correction; all width pairs are
timed (no interpolation between measured widths).

Reliability: a table measured on another device, runtime, batch size or space is refused with a
:class:`TableMismatchError` naming the mismatch; an entry the space needs but the table lacks is
measured on demand when the table belongs to this machine, and is otherwise named in a
:class:`MissingEntryError` -- never treated as zero.
"""

from __future__ import annotations

import io
import json
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune.arch import Conv, Layer
from metaprune.io import atomic_write_json
from metaprune.models.pruned import conv_bn
from metaprune.models.registry import build_pruned
from metaprune.space import ChannelConfig, ChannelSpace

FORMAT = "metaprune-latency/1"
RUNTIMES = ("torch", "onnxruntime")
MODES = ("linear", "sum")
CLOCKS = ("wall", "cpu")
SAMPLINGS = ("uniform", "spread")
TIMING: Mapping[str, Any] = MappingProxyType(
    {"warmup": 3, "repeats": 1, "rounds": 50, "clock": "wall", "settle": 1}
)
"""How :func:`time_runners` times unless told otherwise: the defaults of every timing entry
point (tables, their builder, the CLI, a retrained network's latency)."""


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


def _layer_key(layer: Layer, act: bool, cin: int, cout: int) -> EntryKey:
    return EntryKey(
        layer.kind, layer.kernel, layer.stride, layer.depthwise, layer.in_hw, cin, cout, act
    )


def layer_acts(space: ChannelSpace) -> list[bool]:
    """Whether each layer of ``space.arch.layers`` ends in an activation."""
    return [bool(c.act) if (c := _conv_of(space, ly)) else False for ly in space.arch.layers]


def required_keys(space: ChannelSpace) -> list[EntryKey]:
    """Every distinct entry the configs of ``space`` can need, in layer order."""
    return list(_keys_with_layers(space))


# -- the target ---------------------------------------------------------------------------------
def device_name(device: str | torch.device) -> str:
    """A human-readable name of the device: the GPU name, or the CPU model."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return f"{platform.processor() or 'cpu'} ({platform.machine()})"


def _versions(runtime: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    if runtime == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


Runner = Callable[[], object]


def make_runner(
    module: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    runtime: str = "torch",
    channels_last: bool = False,
    threads: int = 1,
) -> Runner:
    """A zero-argument callable running ``module`` once on ``example`` with the given runtime.

    ``torch``: eager, under ``inference_mode``; ``onnxruntime``: the module exported to ONNX and
    run by an ``InferenceSession`` (CUDA provider on a CUDA device).
    """
    dev = torch.device(device)
    module = module.eval().to(dev)
    x = example.to(dev)
    if channels_last and x.dim() == 4:
        module, x = (
            module.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    if runtime == "torch":

        def run() -> object:
            with torch.inference_mode():
                return module(x)

        return run
    if runtime != "onnxruntime":
        raise ValueError(f"unknown latency runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    providers = ["CUDAExecutionProvider"] if dev.type == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=providers)
    feed = {"x": x.detach().cpu().numpy()}
    return lambda: sess.run(None, feed)


def time_runners(
    runners: Sequence[Runner],
    *,
    device: str | torch.device = "cpu",
    warmup: int = TIMING["warmup"],
    repeats: int = TIMING["repeats"],
    rounds: int = TIMING["rounds"],
    clock: str = TIMING["clock"],
    settle: int = TIMING["settle"],
) -> np.ndarray:
    """Median milliseconds per call of each runner.

    Every runner is warmed up, then called ``repeats`` times in each of ``rounds`` interleaved
    rounds (runner 1, 2, ..., n, then again), so a burst of load from other processes spreads
    over many runners instead of ruining one (on the shared 2-core machine, one call per round
    over 50 rounds gave clearly more repeatable medians than 5 calls over 10 rounds).
    ``settle`` untimed calls open each runner's turn in a round, so its timed calls find its
    weights in the caches (steady-state latency, as when one network serves requests back to
    back) instead of whatever the previous runner left there.  CUDA: timed with CUDA events.
    ``clock='cpu'`` (CPU, one thread only) reads the calling thread's CPU time instead of the
    wall clock, so time the thread spends preempted by other processes is not counted.
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose one of {list(CLOCKS)}")
    if warmup < 0 or settle < 0 or repeats < 1 or rounds < 1:
        raise ValueError(
            "need warmup >= 0, settle >= 0, repeats >= 1, rounds >= 1; got "
            f"{warmup}, {settle}, {repeats}, {rounds}"
        )
    cuda = torch.device(device).type == "cuda"
    if cuda and clock == "cpu":
        raise ValueError("clock='cpu' times the calling CPU thread; use clock='wall' on CUDA")
    now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    samples = np.empty((len(runners), rounds * repeats))
    for run in runners:
        for _ in range(warmup):
            run()
    if cuda:
        torch.cuda.synchronize(device)
    for r in range(rounds):
        for i, run in enumerate(runners):
            cols = slice(r * repeats, (r + 1) * repeats)
            for _ in range(settle):
                run()
            if cuda:
                events = [torch.cuda.Event(enable_timing=True) for _ in range(2 * repeats)]
                for k in range(repeats):
                    events[2 * k].record()
                    run()
                    events[2 * k + 1].record()
                torch.cuda.synchronize(device)
                samples[i, cols] = [
                    events[2 * k].elapsed_time(events[2 * k + 1]) for k in range(repeats)
                ]
            else:
                for k in range(repeats):
                    t0 = now()
                    run()
                    samples[i, r * repeats + k] = (now() - t0) / 1e6
    return np.median(samples, axis=1)


# -- the table ----------------------------------------------------------------------------------
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
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"latency table {p} does not exist")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LatencyTableError(f"latency table {p} is not valid JSON: {e}") from e
        return cls.from_dict(data)

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
        with _threads(self.threads):
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
        with _threads(self.threads):
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


class _threads:
    """Context manager setting ``torch.set_num_threads`` and restoring it."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def fit_configs(space: ChannelSpace, n: int = 10, seed: int = 1234) -> list[ChannelConfig]:
    """The networks the overhead is fitted on: smallest, largest, half width, then random
    configs spread over the whole latency range (:meth:`ChannelSpace.sample_spread`), so the
    linear correction is fitted over every size a search may visit."""
    base = [space.min(), space.max()]
    mid = len(space.ratios) // 2
    base.append(space.config([mid] * len(space.genes)))
    rng = np.random.default_rng(seed)
    return (base + [space.sample_spread(rng) for _ in range(max(0, n - len(base)))])[:n]


def build_latency_table(
    space: ChannelSpace,
    *,
    device: str = "cpu",
    runtime: str = "torch",
    batch: int = 1,
    threads: int = 1,
    channels_last: bool = False,
    warmup: int = TIMING["warmup"],
    repeats: int = TIMING["repeats"],
    rounds: int = TIMING["rounds"],
    clock: str = TIMING["clock"],
    settle: int = TIMING["settle"],
    n_fit: int = 10,
    path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure every entry ``space`` needs on ``device``, then fit the whole-network overhead.

    With ``path`` the table is saved atomically after every chunk of entries, and a table found
    there for the same target (space, device, runtime, batch, threads, timing) is resumed when
    partial and returned as is when complete.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown latency runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    if batch < 1 or threads < 1:
        raise ValueError(f"batch and threads must be >= 1, got {batch}, {threads}")
    if n_fit < 2:
        raise ValueError(f"need at least 2 networks to fit the overhead, got n_fit={n_fit}")
    dev = torch.device(device)
    if clock == "cpu" and (dev.type != "cpu" or threads != 1):
        raise ValueError("clock='cpu' reads one thread's CPU time: it needs device=cpu, threads=1")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    table = LatencyTable(
        space=space.fingerprint,
        family=space.family,
        space_desc=space.describe(),
        device_type=dev.type,
        device=device_name(dev),
        runtime=runtime,
        batch=batch,
        threads=threads,
        input_shape=space.input_shape,
        act=space.arch.act,
        channels_last=channels_last,
        timing={
            "warmup": warmup,
            "repeats": repeats,
            "rounds": rounds,
            "clock": clock,
            "settle": settle,
        },
        versions=_versions(runtime),
    )
    if path is not None and Path(path).is_file():
        old = LatencyTable.load(path)
        if _same_target(old, table) and old.complete:
            return old
        if _same_target(old, table):
            table.entries, table.build_seconds = old.entries, old.build_seconds
    t0 = time.perf_counter() - table.build_seconds

    def save(t: LatencyTable, done: int, total: int) -> None:
        t.build_seconds = time.perf_counter() - t0
        if path is not None:
            t.save(path)
        if progress is not None:
            progress(done, total)

    table.measure(required_keys(space), on_chunk=save)
    fit_overhead(table, space, fit_configs(space, n_fit))
    table.build_seconds = time.perf_counter() - t0
    table.complete = True
    if path is not None:
        table.save(path)
    return table


def _same_target(a: LatencyTable, b: LatencyTable) -> bool:
    fields = ("space", "device_type", "device", "runtime", "batch", "threads", "channels_last")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and a.timing == b.timing


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
                [[table.entries[_layer_key(layer, act, ci or co, co)] for co in outs] for ci in ins]
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
        for key, name in _keys_with_layers(self.space).items():
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


def _keys_with_layers(space: ChannelSpace) -> dict[EntryKey, str]:
    """Every needed entry and the name of the first layer needing it."""
    out: dict[EntryKey, str] = {}
    for layer, act in zip(space.arch.layers, layer_acts(space), strict=True):
        couts = _dim_widths(space, layer.cout)
        if layer.depthwise:
            pairs = [(c, c) for c in couts]
        else:
            pairs = [(ci, co) for ci in _dim_widths(space, layer.cin) for co in couts]
        for ci, co in pairs:
            out.setdefault(_layer_key(layer, act, ci, co), layer.name)
    return out


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


# -- validation ---------------------------------------------------------------------------------
def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall rank correlation (tau-b, ties accounted for) of two equally long sequences."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(
            f"kendall_tau needs two 1-d sequences of equal length >= 2, got {x.shape}, {y.shape}"
        )
    iu = np.triu_indices(x.size, k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def latency_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), share of configs within +-10% (%), and Kendall tau of predicted vs measured."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = np.abs(p - m) / m
    return {
        "mape": float(100 * rel.mean()),
        "within10": float(100 * (rel <= 0.10 + 1e-12).mean()),
        "max_ape": float(100 * rel.max()),
        "tau": kendall_tau(p, m),
    }


def validate_latency(
    model: LatencyModel,
    n: int = 50,
    seed: int = 0,
    rounds: int | None = None,
    passes: int = 2,
    refit: bool = False,
    sampling: str = "uniform",
) -> dict[str, Any]:
    """Measure ``n`` random configs end to end and compare with both prediction modes.

    ``sampling``: ``uniform`` draws every gene uniformly (:meth:`ChannelSpace.sample`: the
    configs cluster within about +-10 % of the mean latency, so the rank correlation there
    mostly measures the timing noise); ``spread`` draws them across the whole latency range
    (:meth:`ChannelSpace.sample_spread`), as a search over several targets visits them.

    The configs are measured in ``passes`` independent interleaved passes; their median is the
    reference, and with two or more passes the agreement of pass 1 with pass 2 (as if pass 1
    were a prediction) is reported as ``repeatability``: the noise ceiling of the measurement,
    which no predictor can beat.  ``refit``: fit the overhead again on the table's fit networks
    (other configs than the validated ones), measured in the same interleaved passes as the
    validated configs, so that both see the same load on a shared machine.
    """
    if n < 2 or passes < 1:
        raise ValueError(f"validation needs n >= 2 configs and passes >= 1, got {n}, {passes}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {list(SAMPLINGS)}")
    space, table = model.space, model.table
    fit_cfgs = [space.config(f["genes"]) for f in table.fit["nets"]] if refit else []
    rng = np.random.default_rng(seed)
    draw = space.sample if sampling == "uniform" else space.sample_spread
    configs = [draw(rng) for _ in range(n)]
    both = fit_cfgs + configs
    runs = np.stack([table.measure_networks(space, both, rounds=rounds) for _ in range(passes)])
    if refit:
        fit_overhead(table, space, fit_cfgs, np.median(runs[:, : len(fit_cfgs)], axis=0))
    runs = runs[:, len(fit_cfgs) :]
    measured = np.median(runs, axis=0)
    out: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "passes": passes,
        "refit": refit,
        "sampling": sampling,
        "measured_ms": measured.tolist(),
        "modes": {},
    }
    if passes >= 2:
        out["repeatability"] = latency_metrics(runs[0], runs[1])
    for mode in MODES:
        pred = model.predict_many(configs, mode=mode)
        out["modes"][mode] = {"predicted_ms": pred.tolist(), **latency_metrics(pred, measured)}
    out["fit"] = {k: v for k, v in table.fit.items() if k != "nets"}
    out["configs"] = [list(c.indices) for c in configs]
    return out
