"""The pruned-model file ``pruned.pt``: what it holds, writing its payload, reading it back.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) ends with an ordinary, smaller network.  Beyond
the paper, that network is saved as ``pruned.pt``: plain data and tensors (the space description,
the channel config, the state dict), so it loads with ``weights_only=True`` and can never run
code.  :func:`read_pruned` rebuilds the space from its description and refuses one whose
fingerprint differs (the model code changed); :func:`load_pruned` returns the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaprune.io import CheckpointError, safe_torch_load
from metaprune.models import build_pruned, space_from_description
from metaprune.space import ChannelConfig, ChannelSpace

FORMAT = "metaprune.pruned/1"


@dataclass(frozen=True)
class PrunedFile:
    """The contents of a ``pruned.pt``: the space, the config and the network's weights."""

    space: ChannelSpace
    config: ChannelConfig
    state_dict: dict[str, torch.Tensor]

    def build(self) -> nn.Module:
        """The network with these weights loaded strictly, in eval mode."""
        model = build_pruned(self.space, self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def pruned_payload(model: nn.Module, space: ChannelSpace, config: ChannelConfig) -> dict[str, Any]:
    """What ``pruned.pt`` holds: plain data and tensors only (loads with ``weights_only=True``)."""
    space.check(config)
    return {
        "format": FORMAT,
        "space": space.describe(),
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }


_PROGRAM_HINTS = {
    ".ts": "a TorchScript program: load it with torch.jit.load",
    ".pt2": "a torch.export program: load it with torch.export.load(path).module()",
    ".onnx": "an ONNX model: run it with onnxruntime.InferenceSession",
}


def pruned_path(path: str | os.PathLike) -> Path:
    """The ``pruned.pt`` that ``path`` names (the file, or the export directory holding it); an
    exported program or a directory without one raises :class:`~metaprune.io.CheckpointError`."""
    p = Path(path)
    if p.is_dir():
        if not (p / "pruned.pt").is_file():
            raise CheckpointError(f"{p} holds no pruned.pt: not an export directory")
        return p / "pruned.pt"
    if p.suffix in _PROGRAM_HINTS:
        raise CheckpointError(
            f"{p} is {_PROGRAM_HINTS[p.suffix]}; load_pruned reads pruned.pt or its directory"
        )
    return p


def read_pruned(path: str | os.PathLike) -> PrunedFile:
    """Read a ``pruned.pt`` (or the export directory holding it) without building the network.

    The space is rebuilt from its description (``space_from_description``) and must have the
    recorded fingerprint; anything else raises
    :class:`~metaprune.io.CheckpointError` naming the problem.
    """
    p = pruned_path(path)
    data = safe_torch_load(p)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format", sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{p} is not a pruned-model file (format {FORMAT!r}, written by export_model or "
            f"retrain); found {found}"
        )
    space = space_from_description(data["space"], str(p))
    return PrunedFile(space, space.from_json(data["config"]), data["state_dict"])


def load_pruned(path: str | os.PathLike) -> nn.Module:
    """The pruned network saved by :func:`export_model` (``pruned.pt`` or its directory), in eval
    mode on the CPU, weights loaded strictly."""
    return read_pruned(path).build()
