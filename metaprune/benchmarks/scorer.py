"""The benchmark scorer: a search's candidates scored by their stand-alone accuracy.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) scores a candidate by the PruningNet proxy; this
:class:`~metaprune.search.scoring.protocol.Scorer` looks it up in a Channel-Bench-Macro results
file instead (the ground truth: each network trained alone), so any search over a ``cbm_*``
space runs in seconds and can be judged by what it finds.  Scores are fractions in [0, 1] like
the proxy's top-1 accuracy: the mean of the file's seeds by default, or one named seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from metaprune.benchmarks.keys import config_key
from metaprune.benchmarks.results import BenchmarkFileError, BenchmarkResults, load_results
from metaprune.space import ChannelConfig, ChannelSpace


class NotInBenchmarkError(LookupError):
    """A config whose network the results file does not hold."""


class BenchmarkScorer:
    """Scores configs of ``space`` by their accuracy in ``results`` (a path or loaded results).

    ``seed=None`` scores the mean over the file's seeds, ``seed=i`` the accuracy of seed ``i``
    alone (0-based), both as fractions (percent / 100).  On construction every entry of the
    space is checked against the space's exact FLOPs and parameter counts, so a file of another
    space is refused (:class:`~metaprune.benchmarks.results.BenchmarkFileError`).
    ``last_details`` gives each scored row its ``bench_key``.
    """

    def __init__(
        self,
        space: ChannelSpace,
        results: BenchmarkResults | str | os.PathLike,
        seed: int | None = None,
    ) -> None:
        self.space = space
        self.results = results if isinstance(results, BenchmarkResults) else load_results(results)
        n = self.results.seeds
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed < n):
            raise ValueError(f"benchmark seed must be None (the mean) or 0..{n - 1}, got {seed!r}")
        self.seed = seed
        wrong = self.results.cost_mismatches(space)
        if wrong:
            raise BenchmarkFileError(
                f"benchmark results {self.results.source} do not fit space {space.family}: "
                f"{len(wrong)} flops/params differ from its exact counts, first {wrong[0]}"
            )
        values = self.results.mean if seed is None else self.results.acc[:, seed]
        self._score = {k: float(v) / 100.0 for k, v in zip(self.results.keys, values, strict=True)}
        self.last_details: list[dict[str, Any]] = []

    def score(self, configs: Sequence[ChannelConfig]) -> list[float]:
        """The benchmark accuracy (fraction) of each config; a config the file lacks raises
        :class:`NotInBenchmarkError`."""
        for c in configs:
            self.space.check(c)
        keys = [config_key(c) for c in configs]
        missing = [k for k in keys if k not in self._score]
        if missing:
            raise NotInBenchmarkError(
                f"{len(missing)} config(s) not in benchmark results {self.results.source} "
                f"({len(self.results)} entries), first key {missing[0]}"
            )
        self.last_details = [{"bench_key": k} for k in keys]
        return [self._score[k] for k in keys]
