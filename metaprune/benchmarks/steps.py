"""Resumable benchmark steps: each step's result is stored once, with the inputs that made it.

A benchmark (``tools/bench_quality.py``) is a chain of steps, some of them long (training a
PruningNet, scoring hundreds of configs).  A step's result is written atomically as
``<root>/<name>.json`` holding its identity (every input it depends on, as plain values) beside
the result; running the step again returns the stored result when the identity is the same and
refuses it with :class:`~metaprune.engine.identity.StaleStageError` naming what changed when it
is not (:func:`~metaprune.engine.identity.require_identity`), so a changed input never reuses an
old result.  Not part of MetaPruning (Liu et al., ICCV 2019): the project's reliability rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from metaprune.engine.identity import require_identity
from metaprune.io import CheckpointError, atomic_save_png, atomic_write_json, read_json

log = logging.getLogger(__name__)


class Steps:
    """Results of named steps under ``root`` (module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Where step ``name`` (``a/b`` nests a sub-step) stores its result."""
        return self.root / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.path(name).is_file()

    def _stored(self, name: str) -> dict[str, Any]:
        """The stored ``{step, identity, result}`` of step ``name``; a
        :class:`~metaprune.io.CheckpointError` naming the file when it is missing or broken."""
        path = self.path(name)
        if not path.is_file():
            raise CheckpointError(f"benchmark step {name} is not done: no {path}")
        stored = read_json(path, f"benchmark step {name}")
        if not isinstance(stored, dict) or "result" not in stored:
            raise CheckpointError(f"benchmark step file {path} holds no result; delete it")
        return stored

    def result(self, name: str) -> Any:
        """The stored result of the finished step ``name`` (for reports that read it)."""
        return self._stored(name)["result"]

    def run(self, name: str, identity: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """The stored result of step ``name`` if it was made from ``identity``, else
        ``compute()`` (JSON-able), stored with ``identity`` and returned."""
        path = self.path(name)
        identity = dict(identity)
        if path.is_file():
            stored = self._stored(name)
            require_identity(
                path, stored.get("identity"), identity, f"delete {path} to redo the step"
            )
            log.info("step %s: done (%s)", name, path)
            return stored["result"]
        log.info("step %s: running", name)
        result = compute()
        atomic_write_json(path, {"step": name, "identity": identity, "result": result})
        return result


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    out = atomic_save_png(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
