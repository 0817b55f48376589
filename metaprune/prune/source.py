"""The trained full-width network a prune starts from (``prune.from``).

A retrain run directory holds it as ``export/pruned.pt`` (``metaprune retrain
retrain.uniform=1.0``); an export directory or ``pruned.pt`` is read with
:func:`~metaprune.export.read_pruned` and must hold the run's space at full width; any other
``.pt`` file must be a state dict of ``build_pruned(space, space.max())``, loaded strictly.  For
a space with depth genes (``space.depth=true``) an export of the space without them does as
well: at full width, with every block, the two are one network.  Anything else is a
:class:`PruneInputError` naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from metaprune.export import FORMAT, read_pruned
from metaprune.io import CheckpointError, safe_torch_load
from metaprune.models import build_pruned, space_from_description
from metaprune.retrain import EXPORT_DIR
from metaprune.space import ChannelSpace


class PruneInputError(ValueError):
    """``prune.from`` is missing, unreadable, or not a full-width network of the run's space."""


def source_file(path: str | os.PathLike) -> Path:
    """The file ``prune.from`` names: the file, an export directory's ``pruned.pt``, or a retrain
    run directory's ``export/pruned.pt``."""
    p = Path(path)
    for candidate in (p, p / "pruned.pt", p / EXPORT_DIR / "pruned.pt"):
        if candidate.is_file():
            return candidate
    raise PruneInputError(
        f"prune.from: {p} is neither a .pt file nor a directory holding pruned.pt or "
        f"{EXPORT_DIR}/pruned.pt"
    )


def load_source(path: str | os.PathLike, space: ChannelSpace) -> tuple[nn.Module, Path]:
    """The full-width network of ``space`` that ``path`` holds (eval mode, CPU) and its file."""
    f = source_file(path)
    try:
        data = safe_torch_load(f)
    except CheckpointError as e:
        raise PruneInputError(f"prune.from: {e}") from e
    if isinstance(data, dict) and data.get("format") == FORMAT:
        desc, twin = data.get("space"), space.width_space
        own = (
            twin
            if isinstance(desc, dict) and desc.get("fingerprint") == twin.fingerprint
            else space
        )
        try:
            space_from_description(data["space"], f"prune.from: {f}", expected=own)
            pruned = read_pruned(f)
        except CheckpointError as e:
            raise PruneInputError(str(e)) from e
        if pruned.config.indices != own.max().indices:
            raise PruneInputError(
                f"prune.from: {f} holds a network of widths {list(pruned.config.width_tuple())},"
                f" not the full-width one {list(own.max().width_tuple())}"
            )
        data = pruned.state_dict
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PruneInputError(f"prune.from: {f} holds no state dict (a mapping of tensors)")
    model = build_pruned(space, space.max())
    try:
        model.load_state_dict(data, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise PruneInputError(
            f"prune.from: the state dict in {f} does not match the full-width {space.family} "
            f"network of this space ({space.fingerprint}): {detail}"
        ) from None
    return model.eval(), f
