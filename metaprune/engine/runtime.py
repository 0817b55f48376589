"""Where a job runs: device, DDP process group, mixed precision, memory format, seeding, and
the CPU heap kept for reuse (:func:`metaprune.engine.heap.keep_cpu_heap`).

One code path serves a single process and ``torchrun``: when ``torchrun`` sets ``WORLD_SIZE > 1``
the process group is initialised (NCCL on CUDA, Gloo on CPU) and each rank uses
``cuda:LOCAL_RANK``; otherwise ``world_size`` is 1 and every collective is a no-op.  RNG states are
captured as tensors and plain data so that checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from metaprune.engine.heap import keep_cpu_heap
from metaprune.engine.switch import switch

AMP_WORDS = ("native", "bf16", "fp16")
"""The precision options' words beyond auto/on/off (:func:`resolve_amp`)."""


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles)."""
    cpu = torch.cpu
    return any(
        getattr(cpu, name, lambda: False)()
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def resolve_amp(
    value: Any, name: str, cuda: bool, native_cpu_auto: bool = False
) -> torch.dtype | None:
    """The autocast dtype of the precision option ``name`` (``value``: ``auto``, ``native``,
    ``bf16`` or ``on``, ``fp16`` (CUDA only, else ``ValueError``), or off) on a CUDA device or
    the CPU.

    ``native`` is bf16 wherever it is computed natively (CUDA, or a CPU with AVX-512 BF16 or
    AMX), else float32 (``None``).  ``auto`` is bf16 on CUDA, and ``native`` when
    ``native_cpu_auto`` (the scorer's choice: inference only, 1.45-1.72x faster there), else
    float32.  bf16 asked for on a CPU without native bf16 warns: it is emulated."""
    mode = switch(value, name, AMP_WORDS)
    if mode == "fp16" and not cuda:
        raise ValueError(f"{name}=fp16 needs a CUDA device; use bf16 or off on CPU")
    native = cuda or native_cpu_bf16()
    if mode == "auto":
        mode = "native" if cuda or native_cpu_auto else "off"
    dtype = {
        "native": torch.bfloat16 if native else None,
        "on": torch.bfloat16,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "off": None,
    }[mode]
    if dtype == torch.bfloat16 and not native:
        warnings.warn(
            f"{name}=bf16 on a CPU without AVX-512 BF16 or AMX: bf16 is emulated there and "
            f"usually slower than float32; set {name}=off",
            stacklevel=3,
        )
    return dtype


@dataclass
class Runtime:
    """The device, the DDP rank layout and the precision settings of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def setup(cls, device: str = "auto", amp: Any = "auto", channels_last: Any = "auto") -> Runtime:
        """Keep the CPU heap, read the ``torchrun`` environment, join the process group, pick
        the device.

        ``amp``: ``auto`` (bf16 autocast on CUDA only), ``bf16``, ``fp16`` (CUDA, with a grad
        scaler) or off.  ``channels_last``: ``auto`` (on CUDA only), true or false.
        """
        keep_cpu_heap()
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        cuda = dev.type == "cuda"
        amp_dtype = resolve_amp(amp, "train.amp", cuda)
        cl = switch(channels_last, "train.channels_last")
        return cls(
            dev, rank, world_size, local_rank, amp_dtype, cuda if cl == "auto" else cl == "on"
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for the forward pass (a no-op when AMP is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Mean of a scalar over all ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world_size


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch as tensors and plain data."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": version,
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
