"""Objects built from the Hydra configuration (the ``conf/`` tree).

The configuration of a run has the groups ``model``, ``space``, ``data``, ``pruningnet``,
``optim``, ``sched``, ``train``, ``search``, ``retrain``, ``pipeline``; each is backed by a
dataclass schema (:mod:`metaprune.schema`) so that a typo fails at start-up.  The functions here
are what the Hydra entry points and a notebook both call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from metaprune.models import create_space
from metaprune.space import ChannelSpace

T = TypeVar("T")


def to_plain(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg or {})


def to_dataclass(schema: type[T], group: Any) -> T:
    """The dataclass ``schema`` filled from a config group (an instance of it, a ``DictConfig``, a
    mapping, or ``None`` for the defaults); unknown keys raise ``ValueError`` naming them."""
    if isinstance(group, schema):
        return group
    values = to_plain(group)
    known = {f.name for f in fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {schema.__name__} field(s) {unknown}; known: {sorted(known)}")
    return schema(**values)


def build_space(
    model: Mapping[str, Any] | DictConfig,
    space: Mapping[str, Any] | DictConfig | None = None,
    data_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> ChannelSpace:
    """The channel space of a ``model`` config group (``name`` plus family options).

    ``in_chans``, ``input_size`` and ``num_classes`` left null in the config are taken from the
    data (``data_shape`` is (C, H, W)); ``space.choices`` replaces the paper's 31 ratios.
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
    choices = to_plain(space).get("choices") if space is not None else None
    return create_space(name, choices=choices, **opts)


def use_supernet(cfg: DictConfig, run_dir: str | os.PathLike) -> str:
    """The trained PruningNet of a run (``cfg.supernet``, else ``run_dir/train``); also made the
    default of ``retrain.pruningnet``, from which ``retrain.init=inherit`` generates weights."""
    supernet = str(cfg.get("supernet") or Path(run_dir) / "train")
    if cfg.retrain.get("pruningnet") is None:
        cfg.retrain.pruningnet = supernet
    return supernet
