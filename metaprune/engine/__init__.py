"""Training engine: the generic :class:`Trainer`, optimiser/schedule, runtime, checkpoints,
stage identities (:mod:`.identity`), evaluation and BN recalibration."""

from metaprune.engine.checkpoint import CheckpointStore, require_fingerprint
from metaprune.engine.evaluate import evaluate, fuse_bn, recalibrate_bn
from metaprune.engine.optim import (
    OptimConfig,
    SchedConfig,
    build_optimizer,
    build_scheduler,
    lr_factor,
    param_groups,
)
from metaprune.engine.runtime import Runtime, get_rng_state, seed_everything, set_rng_state
from metaprune.engine.trainer import TrainConfig, Trainer, supervised_step

__all__ = [
    "CheckpointStore",
    "OptimConfig",
    "Runtime",
    "SchedConfig",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fuse_bn",
    "get_rng_state",
    "lr_factor",
    "param_groups",
    "recalibrate_bn",
    "require_fingerprint",
    "seed_everything",
    "set_rng_state",
    "supervised_step",
]
