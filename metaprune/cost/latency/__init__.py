"""Measured latency look-up tables (LUT) and a validated latency predictor.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3 and 4.3) searches pruned networks under latency
constraints by looking up the latency of every layer in a table measured on the target device and
summing; the table was never released.  Here the table is measured on the machine at hand, in
four steps, one module each:

* :mod:`.timing`: the stopwatch (runners for eager torch or ONNX Runtime, interleaved rounds,
  wall or CPU-time clock; the :data:`TIMING` defaults);
* :mod:`.table`: :class:`LatencyTable`, one entry per distinct layer geometry and width pair,
  refused for another device, runtime, batch size or space; :mod:`.build` measures it
  (:func:`build_latency_table`, resumable);
* :mod:`.predictor`: :class:`LatencyModel`, the sum of a config's entries with a fitted
  correction (``linear`` or ``sum``), loaded by :func:`load_latency_model`;
* :mod:`.validation`: predicted against measured whole networks (MAPE, +-10 %, Kendall tau,
  measurement repeatability).

Departures from the paper are named in each module: entries keyed by geometry, a fitted
correction, measured-on-demand missing entries, and the validation itself.
"""

from metaprune.cost.latency.build import build_latency_table
from metaprune.cost.latency.predictor import (
    MODES,
    LatencyModel,
    fit_configs,
    fit_overhead,
    load_latency_model,
)
from metaprune.cost.latency.table import (
    FORMAT,
    EntryKey,
    LatencyTable,
    LatencyTableError,
    MissingEntryError,
    TableMismatchError,
    layer_acts,
    required_keys,
)
from metaprune.cost.latency.timing import (
    CLOCKS,
    RUNTIMES,
    TIMING,
    Runner,
    device_name,
    make_runner,
    time_runners,
    torch_threads,
)
from metaprune.cost.latency.validation import (
    SAMPLINGS,
    kendall_tau,
    latency_metrics,
    validate_latency,
)

__all__ = [
    "CLOCKS",
    "FORMAT",
    "MODES",
    "RUNTIMES",
    "SAMPLINGS",
    "TIMING",
    "EntryKey",
    "LatencyModel",
    "LatencyTable",
    "LatencyTableError",
    "MissingEntryError",
    "Runner",
    "TableMismatchError",
    "build_latency_table",
    "device_name",
    "fit_configs",
    "fit_overhead",
    "kendall_tau",
    "latency_metrics",
    "layer_acts",
    "load_latency_model",
    "make_runner",
    "required_keys",
    "time_runners",
    "torch_threads",
    "validate_latency",
]
