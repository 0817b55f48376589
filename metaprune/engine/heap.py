"""The CPU heap of a job: glibc malloc told to keep freed memory for reuse.

Execution only, not part of MetaPruning (Liu et al., ICCV 2019); results do not change.  glibc
serves every allocation above its mmap threshold (128 KiB, raised on the fly up to 32 MiB) with
a fresh ``mmap`` and returns it with ``munmap`` on free, so each training or scoring step of a
CPU job maps its activations anew and takes a page fault on every 4 KiB page it first touches.
Measured on 2 cores (``BENCHMARKS.md``, ``tools/bench_heap.py``: 24 PruningNet training steps
and 4 proxy scores on the CBM MobileNet space): 50-52 M minor page faults and 136-153 s of
system time against 1.2-1.6 M and 14-22 s with the heap kept; 1.79x the training images a second
and 0.57x the job's wall time, the same losses and scores.  :func:`keep_cpu_heap` sets
``M_MMAP_MAX`` to 0 (every block from the heap, which freed blocks go back to) and
``M_TRIM_THRESHOLD`` to 1 GiB (the heap's top is given back to the system only past that): the
process keeps its peak heap (there: peak resident memory 5.0-5.2 GB against 3.3-3.5 GB).

It does nothing off glibc, with ``METAPRUNE_KEEP_HEAP=0`` (or ``off``, ``false``, ``no``; a word
:func:`~metaprune.engine.switch.switch` does not know is a ``ValueError``) in the environment,
and when the user has set glibc's malloc options themselves (any ``MALLOC_*`` variable, or
``glibc.malloc`` in ``GLIBC_TUNABLES``): theirs win.  ``tools/bench_heap.py`` measures it
against glibc's defaults.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

from metaprune.engine.switch import switch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory at the heap's top before glibc gives it back (its default: 128 KiB)."""

ENV = "METAPRUNE_KEEP_HEAP"
"""Set to 0 to leave glibc's malloc as it is."""

_applied: bool | None = None


def user_malloc_settings() -> list[str]:
    """The environment variables by which the user set glibc's malloc options."""
    names = [k for k in os.environ if k.startswith("MALLOC_")]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def keep_cpu_heap() -> bool:
    """Have glibc keep freed memory in this process's heap for reuse (once a process); whether
    the settings are in force.  Turned off, off glibc, or where the user set malloc options, it
    changes nothing and says why at debug level."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    own = user_malloc_settings()
    if switch(os.environ.get(ENV, "on"), ENV) == "off":
        log.debug("heap left as is: %s=%s", ENV, os.environ[ENV])
    elif platform.libc_ver()[0] != "glibc":
        log.debug("heap left as is: not glibc")
    elif own:
        log.debug("heap left as is: the user set %s", ", ".join(own))
    else:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
