"""Independent jobs side by side in spawned worker processes, one per core, each with a share of
the caller's torch threads: the pipeline's retrains, the quality benchmark's trainings and
scoring chunks.
Execution only, not part of MetaPruning (Liu et al., ICCV 2019): a job's result is what it
would be in the calling process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

import torch

K = TypeVar("K", bound=Hashable)


def thread_share(processes: int) -> int:
    """Torch threads for each of ``processes`` workers: this process's threads shared out."""
    return max(1, torch.get_num_threads() // processes)


def _init_worker(threads: int, log_level: int | None) -> None:
    torch.set_num_threads(threads)
    if log_level is not None:  # the caller logs: so do its workers, named
        fmt = "%(asctime)s %(processName)s %(name)s: %(message)s"
        logging.basicConfig(level=log_level, format=fmt)


def in_processes(
    fn: Callable[..., Any], jobs: Mapping[K, tuple], processes: int, threads: int
) -> Iterator[tuple[K, Any]]:
    """``(key, fn(*args))`` for each ``key -> args`` of ``jobs``, as each finishes, in
    ``processes`` spawned processes of ``threads`` torch threads each (``fn`` and the args are
    pickled; the workers log as this process does).  On an error or an interrupt the jobs not yet started are cancelled and the running
    ones waited for, then it raises."""
    ctx = get_context("spawn")
    root = logging.getLogger()
    init = (threads, root.getEffectiveLevel() if root.handlers else None)
    with ProcessPoolExecutor(processes, ctx, initializer=_init_worker, initargs=init) as pool:
        futures = {pool.submit(fn, *args): key for key, args in jobs.items()}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run_jobs(
    fn: Callable[..., Any], jobs: Mapping[K, tuple], workers: int
) -> Iterator[tuple[K, Any]]:
    """``(key, fn(*args))`` for each ``key -> args`` of ``jobs``: here, in order, when
    ``workers`` <= 1 or there is one job; else as each finishes, from :func:`in_processes` with
    ``workers`` processes (at most one a job), each with its share of this process's threads."""
    n = min(workers, len(jobs))
    if n <= 1:
        for key, args in jobs.items():
            yield key, fn(*args)
        return
    yield from in_processes(fn, jobs, n, thread_share(n))
