"""What the search engine reports after each generation: a log line and TensorBoard scalars.

Beyond MetaPruning (Liu et al., ICCV 2019, sec. 3.3), which logs nothing of its search: the
engine hands a :class:`GenerationReport` to each callback after every generation, so a new
report (a progress bar, a metrics file) is one class here and the engine stays unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationReport:
    """One finished generation of one stage."""

    stage: str
    generation: int
    """0-based index within the stage."""
    generations: int
    """Generations per stage."""
    candidates: int
    """Candidates of this generation."""
    best: float
    """Best score among the fully evaluated candidates the stage has visited (not a racing
    estimate)."""
    mean: float
    """Mean score of this generation's candidates."""
    front: int
    """Size of the stage's front of fully evaluated candidates over the strategy's front
    costs."""
    seconds: float


class Callback(Protocol):
    """Called by the engine after every generation, and closed when the search ends."""

    def on_generation(self, report: GenerationReport) -> None: ...

    def close(self) -> None: ...


class LogLine:
    """One log line per generation."""

    def on_generation(self, report: GenerationReport) -> None:
        r = report
        log.info(
            "%s gen %d/%d: %d candidates, best %.4f, mean %.4f, front %d, %.1fs",
            r.stage,
            r.generation + 1,
            r.generations,
            r.candidates,
            r.best,
            r.mean,
            r.front,
            r.seconds,
        )

    def close(self) -> None:
        pass


class TensorBoard:
    """Scalars ``<stage>/best``, ``<stage>/mean``, ``<stage>/front_size`` per generation in
    ``log_dir`` (the writer is opened at the first report)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_generation(self, report: GenerationReport) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        for tag, v in (("best", report.best), ("mean", report.mean), ("front_size", report.front)):
            self._writer.add_scalar(f"{report.stage}/{tag}", v, report.generation)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
