"""The PruningNet training loop: stochastic structure sampling (MetaPruning, Liu et al., ICCV 2019,
sec. 3.2), for any loader.

Each step draws the configs of :class:`~metaprune.pruningnet.ConfigSampler` (one uniform config
per step as in the paper; optionally FLOPs-uniform and/or the sandwich max + min), runs the batch
through the PruningNet with weights generated for each, and back-propagates the mean loss into
the meta blocks; with ``train.distill=fullnet`` the max-width network supervises the sampled
ones (:mod:`metaprune.pruningnet.supervision`).  :func:`train_pruningnet` runs it on any
re-iterable of ``(images, labels)`` (a user's own ``DataLoader`` included) through the project's
:class:`~metaprune.engine.Trainer` (SGD, warm-up + schedule, AMP, checkpoints, resume);
:func:`score_config` scores one config with generated weights after BN recalibration (sec. 3.3),
as the epoch-end validation does.  The Hydra stage ``metaprune.train.train(cfg, out_dir)`` builds
data, PruningNet and validation from a config and calls this loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch

from metaprune.engine import (
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    Trainer,
    evaluate,
    recalibrate_bn,
)
from metaprune.engine.trainer import StepFn, ValidateFn
from metaprune.models import build_pruned
from metaprune.pruningnet.checkpoint import pruningnet_meta
from metaprune.pruningnet.net import PruningNet, PruningNetConfig
from metaprune.pruningnet.sampler import ConfigSampler
from metaprune.pruningnet.supervision import fullnet_step
from metaprune.space import ChannelConfig, ChannelSpace

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


def training_step(sampler: ConfigSampler, tcfg: TrainConfig) -> StepFn:
    """The step ``tcfg`` asks for: the paper's (:func:`pruningnet_step`) or, with
    ``distill=fullnet``, full-net supervision (:func:`~metaprune.pruningnet.supervision.
    fullnet_step`)."""
    return pruningnet_step(sampler) if tcfg.distill == "none" else fullnet_step(sampler, tcfg)


def train_pruningnet(
    pnet: PruningNet,
    loader: Iterable[Batch],
    *,
    train: TrainConfig | None = None,
    optim: OptimConfig | None = None,
    sched: SchedConfig | None = None,
    sampler: ConfigSampler | None = None,
    validate: ValidateFn | None = None,
    out_dir: str | os.PathLike | None = None,
    identity: Mapping[str, Any] | None = None,
    runtime: Runtime | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``pnet`` in place by stochastic structure sampling on ``loader``.

    ``loader`` is any re-iterable of ``(images, labels)`` batches with a ``len`` (a
    ``torch.utils.data.DataLoader`` is one); batches are moved to the device.  ``train`` and
    ``options`` (any :class:`~metaprune.engine.TrainConfig` field, e.g. ``epochs=3``,
    ``device="cuda"``, ``seed=1``, ``grad_clip=5.0``; ``options`` override ``train``) set the
    loop (``distill`` and its options: full-net supervision); ``optim`` and ``sched`` the SGD
    recipe.  ``sampler`` draws each step's configs (default: the ``sampling`` and ``sandwich``
    options).  ``validate(pnet)`` is called after every epoch and returns scalars for the
    history (see :func:`score_config` for scoring a config).
    ``out_dir`` receives a checkpoint each epoch (``resume=True`` continues one) and TensorBoard
    scalars; ``None`` writes nothing.  ``identity`` is stored in the checkpoints and checked on
    resume (:class:`~metaprune.engine.Trainer`).  Returns ``{epochs, steps, seconds, history,
    val}`` (``val``: the last validation).
    """
    tcfg = replace(train or TrainConfig(), **options)
    sampler = sampler or ConfigSampler(pnet.space, tcfg.sampling, tcfg.sandwich)
    trainer = Trainer(
        pnet,
        loader,
        out_dir,
        train=tcfg,
        optim=optim,
        sched=sched,
        step_fn=training_step(sampler, tcfg),
        validate_fn=validate,
        fingerprint=run_fingerprint(pnet.space, pnet.config),
        identity=identity,
        meta=pruningnet_meta(pnet),
        runtime=runtime,
    )
    return trainer.fit()


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
