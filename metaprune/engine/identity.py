"""Stage identity: what a stage's result depends on, so a changed input is never reused.

Every stage (``train``, ``search``, ``retrain``) describes its inputs as one nested dict of plain
values (data set, split sizes and seeds, model and space, options, optimiser, schedule, epochs,
the content hash of an input checkpoint ...).  The dict is stored with the stage's checkpoint and
result; resuming or skipping compares the stored dict with the current one, and any difference
stops the run with :class:`StaleStageError` naming the dotted keys that differ and how to start
fresh.  Keys that only affect how a run is executed (device, logging, ``resume``) are left out of
the identity by the stage that builds it.

Beyond the paper (a reliability rule of this project; DESIGN.md, "Reliability").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metaprune.io import CheckpointError

_MISSING = "<missing>"


class StaleStageError(CheckpointError):
    """A stage's stored result or checkpoint was made from other inputs than this run's."""


def flatten(identity: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in identity.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _as_stored(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as the JSON it is stored as (a tuple reads back as a list)."""
    return json.loads(json.dumps(dict(identity)))


def identity_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two identities compared as stored JSON (a key
    missing on one side differs), sorted."""
    a, b = flatten(_as_stored(stored)), flatten(_as_stored(current))
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


def require_identity(
    where: str | os.PathLike,
    stored: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    fresh: str,
) -> None:
    """Raise :class:`StaleStageError` unless ``stored`` equals ``current``.

    ``where`` names the file or directory holding the stored result, ``fresh`` says how to start
    afresh (for example "delete outputs/run/train or choose another run directory").  The error
    lists each differing key with its stored and current value.
    """
    if stored is None:
        raise StaleStageError(
            f"{where} records no stage identity (written by an older version?); "
            f"cannot tell whether it matches this run: {fresh}"
        )
    diff = identity_diff(stored, current)
    if diff:
        a, b = flatten(_as_stored(stored)), flatten(_as_stored(current))
        shown = "; ".join(
            f"{k}: {a.get(k, _MISSING)!r} -> {b.get(k, _MISSING)!r}" for k in diff[:12]
        )
        more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
        raise StaleStageError(
            f"{where} was made from other inputs ({len(diff)} differ: {shown}{more}); "
            f"refusing to resume or reuse it: {fresh}"
        )


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (hex), read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
