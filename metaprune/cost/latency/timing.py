"""Timing runners: how every latency in the project is measured.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 / 4.3) constrains the search by latencies measured on
the target device.  This module is the stopwatch: :func:`make_runner` wraps a module and an input
into a zero-argument call (eager torch under ``inference_mode``, or an ONNX Runtime session), and
:func:`time_runners` times several runners in interleaved rounds and returns their median per
call.  :data:`TIMING` holds the defaults of every timing entry point (tables, their builder, the
CLI, a retrained network's latency).

Departures from the paper (which gives no timing protocol): interleaved rounds, an untimed
``settle`` call before each runner's timed ones (steady-state latency), and an optional CPU-time
clock that does not count preemption by other processes on a shared machine.
"""

from __future__ import annotations

import contextlib
import io
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

RUNTIMES = ("torch", "onnxruntime")
CLOCKS = ("wall", "cpu")
TIMING: Mapping[str, Any] = MappingProxyType(
    {"warmup": 3, "repeats": 1, "rounds": 50, "clock": "wall", "settle": 1}
)
"""How :func:`time_runners` times unless told otherwise: the defaults of every timing entry
point (tables, their builder, the CLI, a retrained network's latency)."""


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


def runtime_versions(runtime: str) -> dict[str, str]:
    """Versions of Python, torch and (for ``onnxruntime``) the runtime, stored with a table."""
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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)``, then restore the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
