"""``search(cfg, out_dir, pruningnet_path)``: the search scored by a trained PruningNet.

What ``metaprune search`` and a notebook call (MetaPruning, Liu et al., ICCV 2019, sec. 3.3): the
PruningNet (and with it the channel space) comes from its checkpoint, the data from ``cfg.data``,
the search settings from ``cfg.search`` (:class:`~metaprune.search.config.SearchConfig`).  Under
``torchrun`` every rank scores a share of each generation and rank 0 writes the results.

The search's identity (:func:`search_inputs` and the settings) covers the PruningNet
checkpoint's content hash, the data it scores with, the latency table and the search and scorer
settings: a checkpointed or finished search of another identity is neither resumed nor reused
(:class:`~metaprune.engine.identity.StaleStageError` naming the keys).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metaprune.search.config import SearchConfig
from metaprune.search.evolution import (
    default_costs,
    full_identity,
    require_resumable,
    run_search,
)
from metaprune.search.results import SearchRun
from metaprune.search.scoring import DistributedScorer, ProxyScorer, Scorer


def search(cfg: Any, out_dir: str | os.PathLike, pruningnet_path: str | os.PathLike) -> SearchRun:
    """Search the space of the PruningNet at ``pruningnet_path`` (file or training run
    directory) with the proxy scorer on ``cfg.data``; results and checkpoints go to
    ``out_dir``.  Returns the finished :class:`~metaprune.search.results.SearchRun`."""
    from metaprune.cost.latency import load_latency_model
    from metaprune.data import build_datasets
    from metaprune.data.identity import require_disjoint_search
    from metaprune.engine import Runtime
    from metaprune.pruningnet import load_pruningnet

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    scfg = SearchConfig.from_any(cfg.get("search"))
    rt = Runtime.setup(scfg.scorer.device)
    pnet = load_pruningnet(pruningnet_path, map_location=rt.device)
    require_disjoint_search(pnet.train_split, cfg.data)
    space = pnet.space
    latency = load_latency_model(scfg.latency_table, space) if scfg.latency_table else None
    inputs = search_inputs(cfg, scfg, pruningnet_path)
    if scfg.resume:  # a stale checkpoint fails before the data and the scorer are set up
        require_resumable(out_dir, full_identity(scfg, inputs))
    data = build_datasets(cfg.data)
    if tuple(data.input_shape) != space.input_shape or data.num_classes != space.num_classes:
        raise ValueError(
            f"data {cfg.data.name} has input {tuple(data.input_shape)} and "
            f"{data.num_classes} classes, but the PruningNet's space expects "
            f"{space.input_shape} and {space.num_classes}"
        )
    scorer: Scorer = ProxyScorer.from_datasets(pnet, data, scfg.scorer, rt.device)
    if rt.distributed:
        scorer = DistributedScorer(scorer, rt.rank, rt.world_size)
    return run_search(
        space,
        scorer,
        default_costs(space, latency),
        scfg,
        Path(out_dir),
        write=rt.is_main,
        extra_meta={"pruningnet": str(pruningnet_path), "data": cfg.data.get("name")},
        identity=inputs,
    )


def search_inputs(
    cfg: DictConfig, scfg: SearchConfig, pruningnet_path: str | os.PathLike
) -> dict[str, Any]:
    """What a search's results depend on beyond its settings: the PruningNet checkpoint's
    content hash, the data it scores with (the ``search`` split and the training images of BN
    recalibration; ``data_identity`` without the test split) and the latency table's hash."""
    from metaprune.data.identity import data_identity
    from metaprune.engine.identity import file_hash
    from metaprune.pruningnet.checkpoint import pruningnet_file

    path = pruningnet_file(pruningnet_path)
    table = scfg.latency_table
    return {
        "pruningnet": {"sha256": file_hash(path)},
        "data": {k: v for k, v in data_identity(cfg.data).items() if k != "test_limit"},
        "latency_table": {"sha256": file_hash(table) if table else None},
    }
