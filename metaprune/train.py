"""Train a PruningNet by stochastic structure sampling (MetaPruning, Liu et al., ICCV 2019, sec. 3.2).

Each step draws the configs of :class:`~metaprune.pruningnet.ConfigSampler` (one uniform config
per step as in the paper; optionally FLOPs-uniform and/or the sandwich max + min), runs the batch
through the PruningNet with weights generated for each, and back-propagates the mean loss into
the meta blocks.  After every epoch the max, min and uniform-0.5 networks (0.5: the choice nearest
to it) are generated, their BN statistics recalibrated on a fixed draw of training batches
(sec. 3.3; augmented as in the paper, or clean with ``train.recalib_augment=false``), and scored
on the ``search`` split; the accuracies go to TensorBoard and ``metrics.json``.

:func:`~metaprune.pruningnet.training.train_pruningnet` is the training loop for any
re-iterable of ``(images, labels)``, a user's own ``DataLoader`` included; ``train(cfg, out_dir)``,
what ``metaprune train`` and a notebook call, builds the data, the PruningNet and the validation
from the config and runs it.
The run directory holds ``checkpoint.pt`` (resume state, each epoch), ``pruningnet.pt`` (the final
hypernetwork, :mod:`metaprune.pruningnet.checkpoint`), ``metrics.json`` and ``tb/``.

The stage's identity (:func:`train_identity`: data set and split options, model and space,
PruningNet options, optimiser, schedule and the ``train`` options that decide the result; not the
device, precision, logging or data folder) is stored in every checkpoint, in ``pruningnet.pt``
and in ``metrics.json``.  A finished run called again with the same identity returns its metrics
without training; a finished run or a resume with another identity stops with
:class:`~metaprune.engine.identity.StaleStageError` naming the keys that differ (beyond the
paper: a reliability rule of this project).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metaprune.config import build_space
from metaprune.data import build_datasets, make_loader
from metaprune.data.identity import data_identity, split_identity
from metaprune.data.recalib import recalibration_batches
from metaprune.engine import (
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    seed_everything,
)
from metaprune.engine.checkpoint import finished_result
from metaprune.engine.trainer import train_loader
from metaprune.groups import to_dataclass
from metaprune.io import atomic_write_json
from metaprune.pruningnet import PruningNet, PruningNetConfig, create_pruningnet
from metaprune.pruningnet.checkpoint import PRUNINGNET_FILE, save_pruningnet
from metaprune.pruningnet.training import (
    reference_configs,
    run_fingerprint,
    score_config,
    train_pruningnet,
)
from metaprune.space import ChannelSpace

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
Batch = tuple[torch.Tensor, torch.Tensor]


def train_identity(
    data: Any,
    space: ChannelSpace,
    pcfg: PruningNetConfig,
    tcfg: TrainConfig,
    optim: OptimConfig,
    sched: SchedConfig,
) -> dict[str, Any]:
    """What a PruningNet training run's result depends on, keyed like the config groups
    (``data`` is the ``data`` group; its ``test_limit`` is left out: training never reads the
    test split)."""
    data_id = {k: v for k, v in data_identity(data).items() if k != "test_limit"}
    return {
        "data": data_id,
        "model": space.describe(),
        "pruningnet": asdict(pcfg),
        "optim": asdict(optim),
        "sched": asdict(sched),
        "train": tcfg.identity(),
    }


def _finished(
    out_dir: Path, fingerprint: str, identity: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The metrics of a finished run of this identity in ``out_dir``, ``None`` if there is none;
    a finished run of another identity raises ``StaleStageError``."""
    if not (out_dir / PRUNINGNET_FILE).is_file():
        return None
    return finished_result(out_dir / METRICS_FILE, fingerprint, identity)


def train(cfg: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Train the PruningNet of ``cfg`` (groups model, space, data, pruningnet, optim, sched,
    train) into ``out_dir``; returns the metrics also written to ``metrics.json``."""
    out_dir = Path(out_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    tcfg = to_dataclass(TrainConfig, cfg.get("train"), "train")
    pcfg = to_dataclass(PruningNetConfig, cfg.get("pruningnet"), "pruningnet")
    ocfg = to_dataclass(OptimConfig, cfg.get("optim"), "optim")
    scfg = to_dataclass(SchedConfig, cfg.get("sched"), "sched")
    rt = Runtime.setup(tcfg.device, tcfg.amp, tcfg.channels_last)
    data = build_datasets(cfg.data)
    space = build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)
    fingerprint = run_fingerprint(space, pcfg)
    identity = train_identity(cfg.data, space, pcfg, tcfg, ocfg, scfg)
    done = _finished(out_dir, fingerprint, identity)
    if done is not None:
        log.info("%s already holds a finished PruningNet run; skipping", out_dir)
        return done

    seed_everything(tcfg.seed)
    pnet = create_pruningnet(space, **asdict(pcfg))
    pnet.train_split = split_identity(cfg.data, "train", len(data.train))
    loader = train_loader(data.train, tcfg, rt)
    refs = reference_configs(space)
    validate = None
    if len(data.search):
        n_recal = max(1, min(tcfg.recalib_batches, len(data.train) // tcfg.batch_size))
        recalib = recalibration_batches(
            data.train,
            n_recal,
            tcfg.batch_size,
            augment=tcfg.recalib_augment,
            seed=tcfg.seed + 1,
            device=rt.device,
        )
        val_loader = make_loader(data.search, tcfg.eval_batch_size, train=False, device=rt.device)

        def validate(model: PruningNet) -> dict[str, float]:
            return {
                f"acc_{k}": score_config(
                    model, c, recalib, itertools.islice(val_loader, tcfg.val_batches)
                )
                for k, c in refs.items()
            }

    result = train_pruningnet(
        pnet,
        loader,
        train=tcfg,
        optim=ocfg,
        sched=scfg,
        validate=validate,
        out_dir=out_dir,
        identity=identity,
        runtime=rt,
    )
    metrics = {
        "fingerprint": fingerprint,
        "identity": identity,
        "space": space.describe(),
        "pruningnet": asdict(pcfg),
        "train_split": pnet.train_split,
        "reference_widths": {k: list(c.width_tuple()) for k, c in refs.items()},
        **result,
    }
    if rt.is_main:
        save_pruningnet(out_dir / PRUNINGNET_FILE, pnet, identity)
        atomic_write_json(out_dir / METRICS_FILE, metrics)
    rt.barrier()
    return metrics
