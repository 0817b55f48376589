"""Objects built from the Hydra configuration (the ``conf/`` tree).

The configuration of a run has the groups ``model``, ``space``, ``data``, ``pruningnet``,
``optim``, ``sched``, ``train``, ``search``, ``retrain``, ``pipeline``; each is backed by a
dataclass schema (:mod:`metaprune.schema`) so that a typo fails at start-up.  The functions here
are what the Hydra entry points and a notebook both call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metaprune.groups import to_plain
from metaprune.models import create_space
from metaprune.models.registry import space_differences
from metaprune.space import ChannelSpace


def build_space(
    model: Mapping[str, Any] | DictConfig,
    space: Mapping[str, Any] | DictConfig | None = None,
    data_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> ChannelSpace:
    """The channel space of a ``model`` config group (``name`` plus family options).

    ``in_chans``, ``input_size`` and ``num_classes`` left null in the config are taken from the
    data (``data_shape`` is (C, H, W)); ``space.choices`` replaces the paper's 31 ratios;
    ``space.depth`` adds a depth gene per removable block.
    """
    opts = to_plain(model)
    name = opts.pop("name")
    if data_shape is not None:
        if opts.get("in_chans") is None:
            opts["in_chans"] = data_shape[0]
        if opts.get("input_size") is None:
            opts["input_size"] = data_shape[1]
    if opts.get("num_classes") is None and num_classes is not None:
        opts["num_classes"] = num_classes
    opts = {k: v for k, v in opts.items() if v is not None}
    group = to_plain(space) if space is not None else {}
    return create_space(name, choices=group.get("choices"), depth=group.get("depth", False), **opts)


class SupernetMismatchError(ValueError):
    """``supernet=`` names a PruningNet of another family or space than ``model`` / ``space``."""


def check_supernet(cfg: DictConfig, supernet: str | os.PathLike) -> None:
    """Check that the PruningNet at ``supernet`` has the space ``cfg.model`` and
    ``cfg.space`` describe (options the config leaves to the data are taken from the PruningNet,
    whose fit to the data the stage itself checks); otherwise :class:`SupernetMismatchError`
    naming both spaces and every difference is raised."""
    from metaprune.pruningnet import load_pruningnet

    found = load_pruningnet(supernet).space.describe()
    opts = found["options"]
    shape = (opts.get("in_chans"), opts.get("input_size"), opts.get("input_size"))
    wanted = build_space(cfg.model, cfg.get("space"), shape, opts.get("num_classes")).describe()
    if found["fingerprint"] != wanted["fingerprint"]:
        raise SupernetMismatchError(
            f"supernet={supernet} is a PruningNet of {found['family']} (space "
            f"{found['fingerprint']}), but model/space configure {wanted['family']} (space "
            f"{wanted['fingerprint']}); they differ in: {'; '.join(space_differences(found, wanted))}"
            f" (supernet vs config). Set model=/space= to the PruningNet's, or leave supernet unset"
        )


def supernet_path(cfg: DictConfig, run_dir: str | os.PathLike) -> str:
    """The PruningNet a run searches with: ``cfg.supernet``, else ``run_dir/train``."""
    return str(cfg.get("supernet") or Path(run_dir) / "train")


def use_supernet(cfg: DictConfig, run_dir: str | os.PathLike) -> str:
    """The trained PruningNet of a run (``cfg.supernet``, else ``run_dir/train``); also made the
    default of ``retrain.pruningnet``, from which ``retrain.init=inherit`` generates weights.  A
    ``cfg.supernet`` of another space than the config's is refused here, before any stage runs
    (:func:`check_supernet`)."""
    supernet = supernet_path(cfg, run_dir)
    if cfg.get("supernet"):
        check_supernet(cfg, supernet)
    if cfg.retrain.get("pruningnet") is None:
        cfg.retrain.pruningnet = supernet
    return supernet
