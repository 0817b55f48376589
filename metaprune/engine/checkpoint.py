"""Resumable training checkpoints (DESIGN.md, "Reliability").

Each epoch the full training state is written atomically to ``checkpoint.pt``; the previous good
file is first renamed to ``checkpoint.prev.pt``.  A kill therefore leaves at least one complete
checkpoint.  Loading refuses a corrupt file (falling back to the previous one, which is never
overwritten by a corrupt file) and refuses a checkpoint of another job, naming both fingerprints.
Files hold only tensors and plain data and load with ``weights_only=True``.  A finished stage's
JSON result is read back by :func:`finished_result`, which refuses one of another job or made
from other inputs (its stage identity, :mod:`metaprune.engine.identity`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metaprune.engine.identity import require_identity
from metaprune.io import CheckpointError, atomic_torch_save, read_json, safe_torch_load

log = logging.getLogger(__name__)

FORMAT = "metaprune.train_state/1"
LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def require_fingerprint(path: str | os.PathLike, found: Any, expected: str) -> None:
    """Raise :class:`CheckpointError` unless ``found == expected``, naming both."""
    if found != expected:
        raise CheckpointError(
            f"{path} belongs to fingerprint {found}, not to this run's {expected} "
            "(another space, model family or job): refusing to load it"
        )


def finished_result(
    path: str | os.PathLike, fingerprint: str, identity: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The result a finished stage wrote to ``path`` (``metrics.json``, ``result.json``), or
    ``None`` if there is none; one of another job (``fingerprint``) or made from other inputs
    (``identity``: :func:`~metaprune.engine.identity.require_identity`) is refused."""
    path = Path(path)
    if not path.is_file():
        return None
    result = read_json(path)
    require_fingerprint(path, result.get("fingerprint"), fingerprint)
    fresh = f"delete {path.parent} or choose another run directory"
    require_identity(path, result.get("identity"), identity, fresh)
    return result


class CheckpointStore:
    """The rotating pair ``checkpoint.pt`` / ``checkpoint.prev.pt`` of one run directory."""

    def __init__(self, out_dir: str | os.PathLike, fingerprint: str) -> None:
        self.dir = Path(out_dir)
        self.fingerprint = fingerprint
        self.latest = self.dir / LATEST
        self.previous = self.dir / PREVIOUS
        self._latest_ok = False  # True once ``latest`` is known to be complete and ours

    def exists(self) -> bool:
        return self.latest.exists() or self.previous.exists()

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically as the latest checkpoint, keeping the previous good one."""
        if self._latest_ok and self.latest.exists():
            os.replace(self.latest, self.previous)
        atomic_torch_save(self.latest, {"format": FORMAT, "fingerprint": self.fingerprint, **state})
        self._latest_ok = True
        return self.latest

    def load(self) -> dict[str, Any] | None:
        """The newest loadable checkpoint, or ``None`` when the directory has none.

        A corrupt latest file is skipped with a warning in favour of the previous one; if every
        file is corrupt, :class:`CheckpointError` lists them.  A checkpoint of another fingerprint
        is refused outright.
        """
        errors = []
        for path in (self.latest, self.previous):
            if not path.exists():
                continue
            try:
                state = safe_torch_load(path)
                if not isinstance(state, dict) or state.get("format") != FORMAT:
                    raise CheckpointError(f"{path} is not a metaprune training checkpoint")
            except CheckpointError as e:
                log.warning("refusing checkpoint: %s", e)
                errors.append(str(e))
                continue
            require_fingerprint(path, state.get("fingerprint"), self.fingerprint)
            self._latest_ok = path == self.latest
            if errors:
                log.warning("resuming from the previous checkpoint %s", path)
            return state
        if errors:
            raise CheckpointError(f"no usable checkpoint in {self.dir}: " + "; ".join(errors))
        return None
