"""Retrains in worker processes, started as they become known.

``metaprune pipeline`` knows some of its retrains before the search has run (a uniform baseline
that a target's bounds fix, :func:`~metaprune.search.baseline.fixed_baseline`) and the rest only
after it.  :class:`RetrainPool` runs the first kind on the cores the PruningNet's training and the
search leave free, and the rest once :meth:`RetrainPool.open` hands it every core.  Jobs start in
the order they are added, at most ``slots`` at once; each is a whole
:func:`~metaprune.retrain.retrain` in a spawned process with ``threads`` torch threads, so it
resumes or skips itself like any retrain.  A job added twice under one label runs once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from types import TracebackType
from typing import Any

from omegaconf import OmegaConf

from metaprune.space import ChannelConfig

log = logging.getLogger(__name__)


def retrain_job(
    cfg: dict[str, Any], out_dir: str, config: ChannelConfig, threads: int | None
) -> dict[str, Any]:
    """One retrain, in this process or a worker (``threads``: the worker's torch threads)."""
    from metaprune.retrain import retrain

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return retrain(OmegaConf.create(cfg), out_dir, config)


class RetrainPool:
    """``workers`` spawned processes running :func:`retrain_job`; a context manager (leaving it
    cancels what has not started and waits for what has)."""

    def __init__(self, workers: int, threads: int, slots: int | None = None) -> None:
        if workers < 1 or threads < 1:
            raise ValueError(f"RetrainPool needs workers >= 1 and threads >= 1, got {workers}")
        self.workers, self.threads = workers, threads
        self._slots = workers if slots is None else max(0, min(slots, workers))
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._labels: list[str] = []
        self._futures: dict[str, Future] = {}
        self._running = 0
        self._closed = False
        self._cond = threading.Condition()
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        self._thread = threading.Thread(target=self._dispatch, name="retrain-pool", daemon=True)
        self._thread.start()

    def add(self, label: str, cfg: dict[str, Any], out_dir: str, config: ChannelConfig) -> None:
        """Queue a retrain of ``config`` into ``out_dir`` (``cfg``: the plain config)."""
        with self._cond:
            if label in self._labels:
                return
            self._labels.append(label)
            self._queue.append((label, (cfg, out_dir, config)))
            self._cond.notify_all()

    def open(self) -> None:
        """Let every worker take jobs."""
        with self._cond:
            self._slots = self.workers
            self._cond.notify_all()

    def results(self) -> dict[str, dict[str, Any]]:
        """Every job's result by label, once all have run (opens every slot first); a failed
        job's error is raised."""
        self.open()
        with self._cond:
            self._cond.wait_for(lambda: not self._queue)
            futures = {fut: label for label, fut in self._futures.items()}
        out: dict[str, dict[str, Any]] = {}
        for fut in as_completed(futures):
            label = futures[fut]
            out[label] = fut.result()
            log.info(
                "retrain/%s: test accuracy %.4f (%d/%d done)",
                label,
                out[label]["test_accuracy"],
                len(out),
                len(futures),
            )
        return {label: out[label] for label in self._labels}

    def close(self) -> None:
        """Drop the jobs not started, wait for the running ones, stop the workers."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RetrainPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _dispatch(self) -> None:
        """Start queued jobs while a slot is free (submitting under the lock, so that
        :meth:`close` never meets a job half submitted)."""
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or (self._queue and self._running < self._slots)
                )
                if self._closed:
                    return
                label, args = self._queue.popleft()
                log.info("retrain/%s started (%d running)", label, self._running + 1)
                fut = self._pool.submit(retrain_job, *args, self.threads)
                self._futures[label] = fut
                self._running += 1
                self._cond.notify_all()
            fut.add_done_callback(self._finished)

    def _finished(self, fut: Future) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()
