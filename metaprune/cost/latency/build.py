"""Building a latency table: measure every entry a space needs, then fit the predictor.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3) measures its look-up table once per target
device.  :func:`build_latency_table` measures the entries of :mod:`.table` with :mod:`.timing`,
fits the whole-network correction of :mod:`.predictor` and saves the table atomically after every
chunk, so an interrupted build resumes where it stopped.  It sits above both the table and the
predictor (it needs each).

Departure from the paper: equal layer geometries share one entry, which is what makes a 31-choice
MobileNetV2 table build in minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from metaprune.cost.latency.predictor import fit_configs, fit_overhead
from metaprune.cost.latency.table import LatencyTable, required_keys
from metaprune.cost.latency.timing import RUNTIMES, TIMING, device_name, runtime_versions
from metaprune.space import ChannelSpace


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
        versions=runtime_versions(runtime),
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
