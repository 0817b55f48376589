"""Which channel config a retrain trains, and the directory name that says so.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3-4) retrains the winner of the search; the paper's
baseline is the uniform-width network of the same budget.  :func:`resolve_config` takes the
config from exactly one of ``retrain.config`` (a JSON file: ``ChannelConfig.to_json()``, a
``winners.json`` entry or an export's ``model.json``), ``retrain.from_search`` with
``retrain.target`` (a winner, or the best scored config under another bound and the search's
constraints), or
``retrain.uniform`` (every gene at the nearest choice to a ratio); :func:`retrain_label` names
the run directory after it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metaprune.io import read_json
from metaprune.models import space_from_description
from metaprune.retrain.config import RetrainConfig
from metaprune.space import ChannelConfig, ChannelSpace


def _source(cfg: RetrainConfig) -> str:
    """Which of ``config``, ``from_search``, ``uniform`` names the config (exactly one)."""
    sources = [n for n in ("config", "from_search", "uniform") if getattr(cfg, n) is not None]
    if not sources:
        raise ValueError(
            "retrain needs a channel config: set one of retrain.config (a JSON file), "
            "retrain.from_search (a search run, with retrain.target) or retrain.uniform (a ratio)"
        )
    if len(sources) > 1:
        raise ValueError(
            f"retrain got several channel configs ({', '.join('retrain.' + s for s in sources)});"
            " set exactly one"
        )
    if cfg.target is not None and sources[0] != "from_search":
        raise ValueError("retrain.target selects a winner of retrain.from_search, which is unset")
    return sources[0]


def _config_from_file(path: str | os.PathLike, space: ChannelSpace) -> ChannelConfig:
    p = Path(path)
    data = read_json(p, "retrain.config:")
    if isinstance(data, dict) and "genes" not in data and isinstance(data.get("config"), dict):
        data = data["config"]  # a winners.json entry or an export's model.json
    if not isinstance(data, dict):
        raise ValueError(f"retrain.config: {p} holds no channel config (a JSON object)")
    try:
        return space.from_json(data)
    except ValueError as e:
        raise ValueError(f"retrain.config: {p}: {e}") from e


def _config_from_search(run_dir: str, target: Any, space: ChannelSpace) -> ChannelConfig:
    from metaprune.search import load_search

    run = load_search(run_dir)
    where = f"retrain.from_search: {run_dir} (the searched space)"
    space_from_description(run.meta["space"], where, expected=space)
    winners = run.winners
    targets = [w["target"] for w in winners]
    if target is None:
        if len(winners) != 1:
            raise ValueError(
                f"retrain.from_search: {run_dir} has {len(winners)} winners (targets {targets}); "
                "choose one with retrain.target"
            )
        row = winners[0]["best"]
    else:
        match = [w for w in winners if w["target"] == target]
        row = match[0]["best"] if match else run.best(constrained=True, **{run.cost: target})
    if row is None:
        raise ValueError(
            f"retrain.from_search: no scored config of {run_dir} meets target {target!r} on "
            f"{run.cost} (the search's targets: {targets})"
        )
    return run.config(row)


def resolve_config(cfg: RetrainConfig, space: ChannelSpace) -> ChannelConfig:
    """The config to retrain, from exactly one of ``cfg.config``, ``cfg.from_search`` (with
    ``cfg.target``) or ``cfg.uniform``; none, several, or a config of another space raise
    ``ValueError`` naming the problem."""
    source = _source(cfg)
    if source == "config":
        return _config_from_file(cfg.config, space)
    if source == "from_search":
        return _config_from_search(cfg.from_search, cfg.target, space)
    return space.uniform(float(cfg.uniform), nearest=True)


def slug(value: Any) -> str:
    """``value`` as a directory-name fragment: ``0.5`` -> ``0.5``, a band ``[0.45, 0.5]`` ->
    ``0.45-0.5`` (runs of other characters become one ``-``)."""
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def retrain_label(cfg: Any) -> str:
    """A directory name for the retrain of ``cfg`` (whole config or its ``retrain`` group):
    ``uniform0.5``, ``target0.5``, ``winner``, ``config-<file stem>``, plus ``-inherit`` /
    ``-kd`` when used."""
    group = cfg.get("retrain") if isinstance(cfg, DictConfig | dict) and "retrain" in cfg else cfg
    rcfg = RetrainConfig.from_any(group)
    source = _source(rcfg)
    if source == "uniform":
        label = f"uniform{float(rcfg.uniform):g}"
    elif source == "from_search":
        label = "winner" if rcfg.target is None else f"target{slug(rcfg.target)}"
    else:
        label = f"config-{slug(Path(rcfg.config).stem)}"
    if rcfg.init == "inherit":
        label += "-inherit"
    if rcfg.kd.teacher:
        label += "-kd"
    return label
