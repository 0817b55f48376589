"""Independent jobs side by side in spawned worker processes, one per core, each with a share of
the caller's torch threads: the pipeline's retrains and the quality benchmark's scoring chunks.
Execution only, not part of MetaPruning (Liu et al., ICCV 2019): a job's result is what it
would be in the calling process."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

import torch

K = TypeVar("K", bound=Hashable)


def thread_share(processes: int) -> int:
    """Torch threads for each of ``processes`` workers: this process's threads shared out."""
    return max(1, torch.get_num_threads() // processes)


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def in_processes(
    fn: Callable[..., Any], jobs: Mapping[K, tuple], processes: int, threads: int
) -> Iterator[tuple[K, Any]]:
    """``(key, fn(*args))`` for each ``key -> args`` of ``jobs``, as each finishes, in
    ``processes`` spawned processes of ``threads`` torch threads each (``fn`` and the args are
    pickled).  On an error or an interrupt the jobs not yet started are cancelled and the running
    ones waited for, then it raises."""
    ctx = get_context("spawn")
    with ProcessPoolExecutor(processes, ctx, initializer=_set_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *args): key for key, args in jobs.items()}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
