"""Saving and loading a trained PruningNet (MetaPruning, Liu et al., ICCV 2019, sec. 3.2-3.3).

The paper trains the PruningNet once and then searches with it; here the hand-over is one file,
``pruningnet.pt``, holding the weights, the channel space and the PruningNet options as plain JSON
(so the file rebuilds its own network), the split of the data it was trained on (so a search
on overlapping images is refused, :func:`metaprune.data.identity.require_disjoint_search`) and the
training stage's identity (what it was trained from, :mod:`metaprune.engine.identity`).
:func:`load_pruningnet` also reads the PruningNet out of a training checkpoint
(``checkpoint.pt``).  Files hold only tensors and plain data and load with ``weights_only=True``;
a space whose fingerprint differs from the one recorded is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metaprune.engine.checkpoint import FORMAT as TRAIN_STATE_FORMAT
from metaprune.io import CheckpointError, atomic_torch_save, safe_torch_load
from metaprune.models import space_from_description
from metaprune.pruningnet.net import PruningNet, create_pruningnet
from metaprune.space import ChannelSpace

PRUNINGNET_FILE = "pruningnet.pt"
FORMAT = "metaprune.pruningnet/1"


def pruningnet_meta(pnet: PruningNet) -> dict[str, Any]:
    """What rebuilds ``pnet`` without its weights: the space, the options and the split it was
    trained on (stored in ``pruningnet.pt`` and in every training checkpoint)."""
    return {
        "space": pnet.space.describe(),
        "pruningnet": asdict(pnet.config),
        "train_split": pnet.train_split,
    }


def pruningnet_file(path: str | os.PathLike) -> Path:
    """The PruningNet file ``path`` names: ``path`` itself, or ``pruningnet.pt`` in a run
    directory."""
    path = Path(path)
    return path / PRUNINGNET_FILE if path.is_dir() else path


def save_pruningnet(
    path: str | os.PathLike, pnet: PruningNet, identity: Mapping[str, Any] | None = None
) -> Path:
    """Write ``pnet`` atomically to ``path`` (a file, or a directory for ``pruningnet.pt``) with
    the identity of the stage that trained it; returns the file."""
    path = pruningnet_file(path)
    state = {
        "format": FORMAT,
        **pruningnet_meta(pnet),
        "identity": dict(identity) if identity is not None else None,
        "state_dict": pnet.state_dict(),
    }
    atomic_torch_save(path, state)
    return path


def load_pruningnet(
    path: str | os.PathLike, space: ChannelSpace | None = None, map_location: Any = "cpu"
) -> PruningNet:
    """The PruningNet saved by :func:`save_pruningnet`: ``path`` is ``pruningnet.pt``, a training
    ``checkpoint.pt`` or the run directory.  The space is rebuilt from the file's plain JSON with
    ``space_from_description``; a file whose space fingerprint differs from the rebuilt one, or
    from ``space`` when given, is refused with :class:`~metaprune.models.SpaceMismatchError`.
    The split it was trained on, when recorded, is the returned network's ``train_split``."""
    path = pruningnet_file(path)
    if not path.is_file():
        raise CheckpointError(
            f"no trained PruningNet at {path}: train one first (metaprune train, or the "
            "pipeline), or name one with supernet="
        )
    state = safe_torch_load(path, map_location=map_location)
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == FORMAT:
        meta, weights = state, state["state_dict"]
    elif fmt == TRAIN_STATE_FORMAT and "pruningnet" in state["meta"]:
        meta, weights = state["meta"], state["model"]
    else:
        raise CheckpointError(f"{path} is not a PruningNet checkpoint")
    rebuilt = space_from_description(meta["space"], str(path), expected=space)
    pnet = create_pruningnet(rebuilt, **meta["pruningnet"])
    pnet.train_split = meta.get("train_split")
    try:
        pnet.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the PruningNet it describes: {e}") from e
    return pnet
