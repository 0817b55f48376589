"""Ground truth from Channel-Bench-Macro: key <-> config, results files, the benchmark scorer
and the file's reference figures, one file each; the quality benchmark's steps (``steps``,
``oracle``, ``quality``) are imported from their modules (they pull in the search and training).
"""

from metaprune.benchmarks.keys import (
    BENCHMARK_FAMILIES,
    BenchmarkKeyError,
    BenchmarkSpaceError,
    check_benchmark_space,
    config_key,
    key_config,
)
from metaprune.benchmarks.reference import (
    band_mask,
    best_within,
    percentile,
    rank_correlations,
    reference_taus,
    spearman_rho,
)
from metaprune.benchmarks.results import BenchmarkFileError, BenchmarkResults, load_results
from metaprune.benchmarks.scorer import BenchmarkScorer, NotInBenchmarkError

__all__ = [
    "BENCHMARK_FAMILIES",
    "BenchmarkFileError",
    "BenchmarkKeyError",
    "BenchmarkResults",
    "BenchmarkScorer",
    "BenchmarkSpaceError",
    "NotInBenchmarkError",
    "band_mask",
    "best_within",
    "check_benchmark_space",
    "config_key",
    "key_config",
    "load_results",
    "percentile",
    "rank_correlations",
    "reference_taus",
    "spearman_rho",
]
