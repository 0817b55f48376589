"""Train a PruningNet by stochastic structure sampling (MetaPruning, Liu et al., ICCV 2019, sec. 3.2).

Each step draws the configs of :class:`~metaprune.pruningnet.ConfigSampler` (one uniform config
per step as in the paper; optionally FLOPs-uniform and/or the sandwich max + min), runs the batch
through the PruningNet with weights generated for each, and back-propagates the mean loss into
the meta blocks.  After every epoch the max, min and uniform-0.5 networks (0.5: the choice nearest
to it) are generated, their BN statistics recalibrated on cached training batches (sec. 3.3), and
scored on the ``search`` split; the accuracies go to TensorBoard and ``metrics.json``.

``train(cfg, out_dir)`` is what ``metaprune train`` and a notebook call.  The run directory holds
``checkpoint.pt`` (resume state, each epoch), ``pruningnet.pt`` (the final hypernetwork with its
space and options as plain JSON), ``metrics.json`` and ``tb/``.  A finished run called again
returns its metrics without training.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metaprune.config import build_space, to_dataclass, to_plain
from metaprune.data import build_datasets, make_loader
from metaprune.engine import (
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    Trainer,
    evaluate,
    recalibrate_bn,
    require_fingerprint,
    seed_everything,
)
from metaprune.engine.trainer import StepFn, train_loader
from metaprune.io import atomic_write_json, read_json
from metaprune.models import build_pruned
from metaprune.pruningnet import ConfigSampler, PruningNet, PruningNetConfig, create_pruningnet
from metaprune.pruningnet.checkpoint import PRUNINGNET_FILE, pruningnet_meta, save_pruningnet
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
Batch = tuple[torch.Tensor, torch.Tensor]


def run_fingerprint(space: ChannelSpace, pcfg: PruningNetConfig) -> str:
    """Identity of a PruningNet training run: the space and the hypernetwork's options."""
    affine = "-affine" if pcfg.bn_affine else ""
    return f"{space.family}:{space.fingerprint}:{pcfg.encoding}-h{pcfg.hidden}{affine}"


def pruningnet_step(sampler: ConfigSampler) -> StepFn:
    """The training step: mean loss of the PruningNet over the configs ``sampler`` draws."""

    def step(model, x, y, rng, loss_fn):
        configs = sampler.sample(rng)
        return sum(loss_fn(model(x, c), y) for c in configs) / len(configs)

    return step


def reference_configs(space: ChannelSpace) -> dict[str, ChannelConfig]:
    """The configs validated each epoch: ``max``, ``min`` and ``uniform0.5`` (every gene at the
    choice nearest to 0.5)."""
    return {"max": space.max(), "min": space.min(), "uniform0.5": space.uniform(0.5, nearest=True)}


def score_config(
    pnet: PruningNet,
    config: ChannelConfig,
    recalib: Iterable[Batch],
    batches: Iterable[Batch],
) -> float:
    """Top-1 accuracy of ``config`` with generated weights, after BN recalibration on
    ``recalib`` (sec. 3.3), over ``batches``."""
    device = pnet.classifier.weight.device
    net = build_pruned(pnet.space, config, device=device)
    net.load_state_dict(pnet.generate(config))
    recalibrate_bn(net, recalib)
    return evaluate(net, batches)[0]


def _finished(out_dir: Path, fingerprint: str, epochs: int) -> dict[str, Any] | None:
    path = out_dir / METRICS_FILE
    if not (path.is_file() and (out_dir / PRUNINGNET_FILE).is_file()):
        return None
    metrics = read_json(path)
    require_fingerprint(path, metrics.get("fingerprint"), fingerprint)
    return metrics if metrics.get("epochs", 0) >= epochs else None


def train(cfg: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Train the PruningNet of ``cfg`` (groups model, space, data, pruningnet, optim, sched,
    train) into ``out_dir``; returns the metrics also written to ``metrics.json``."""
    out_dir = Path(out_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    tcfg = to_dataclass(TrainConfig, cfg.get("train"))
    pcfg = to_dataclass(PruningNetConfig, cfg.get("pruningnet"))
    rt = Runtime.setup(tcfg.device, tcfg.amp, tcfg.channels_last)
    data = build_datasets(cfg.data)
    space = build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)
    fingerprint = run_fingerprint(space, pcfg)
    done = _finished(out_dir, fingerprint, tcfg.epochs)
    if done is not None:
        log.info("%s already holds a finished PruningNet run; skipping", out_dir)
        return done

    seed_everything(tcfg.seed)
    pnet = create_pruningnet(space, **asdict(pcfg))
    loader = train_loader(data.train, tcfg, rt)
    recal_loader = make_loader(
        data.train, tcfg.batch_size, train=True, device=rt.device, seed=tcfg.seed + 1
    )
    recalib = list(itertools.islice(recal_loader, tcfg.recalib_batches))
    val_loader = make_loader(data.search, tcfg.eval_batch_size, train=False, device=rt.device)
    refs = reference_configs(space)

    def validate(model: PruningNet) -> dict[str, float]:
        return {
            f"acc_{k}": score_config(
                model, c, recalib, itertools.islice(val_loader, tcfg.val_batches)
            )
            for k, c in refs.items()
        }

    trainer = Trainer(
        pnet,
        loader,
        out_dir,
        train=tcfg,
        optim=to_dataclass(OptimConfig, cfg.get("optim")),
        sched=to_dataclass(SchedConfig, cfg.get("sched")),
        step_fn=pruningnet_step(ConfigSampler(space, tcfg.sampling, tcfg.sandwich)),
        validate_fn=validate if len(data.search) else None,
        fingerprint=fingerprint,
        meta={**pruningnet_meta(pnet), "config": to_plain(cfg)},
        runtime=rt,
    )
    result = trainer.fit()
    metrics = {
        "fingerprint": fingerprint,
        "space": space.describe(),
        "pruningnet": asdict(pcfg),
        "reference_widths": {k: list(c.width_tuple()) for k, c in refs.items()},
        **result,
    }
    if rt.is_main:
        save_pruningnet(out_dir / PRUNINGNET_FILE, pnet)
        atomic_write_json(out_dir / METRICS_FILE, metrics)
    rt.barrier()
    return metrics
