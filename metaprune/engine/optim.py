"""Optimiser and learning-rate schedule shared by PruningNet training and retraining.

MetaPruning (Liu et al., ICCV 2019, sec. 4) trains the PruningNet and the pruned networks with SGD
with momentum and weight decay and a decaying learning rate.  Departing from the paper, as most
modern recipes do, we exclude BN parameters and every bias from weight decay and add a linear
warm-up; the cosine or linear decay is evaluated per optimisation step, not per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class OptimConfig:
    """The ``optim`` config group: SGD hyper-parameters."""

    name: str = "sgd"
    """Optimiser; only ``sgd`` (the paper's) is implemented."""
    lr: float = 0.1
    """Peak learning rate (after warm-up), for the global batch size."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum."""
    weight_decay: float = 4e-5
    """L2 weight decay on conv/linear weights; never on BN parameters or biases."""

    def validate(self) -> OptimConfig:
        """Check names and ranges; raises ``ValueError`` naming the field."""
        if self.name != "sgd":
            raise ValueError(f"unknown optimizer optim.name={self.name!r}; implemented: ['sgd']")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"optim.momentum must be in [0, 1) and optim.weight_decay >= 0, got "
                f"{self.momentum}, {self.weight_decay}"
            )
        return self


@dataclass
class SchedConfig:
    """The ``sched`` config group: per-step learning-rate schedule with linear warm-up."""

    name: str = "cosine"
    """``cosine``, ``linear`` (decay to ``final_factor``) or ``constant``."""
    warmup_epochs: float = 0.0
    """Epochs of linear warm-up from ``lr / warmup_steps`` to ``lr`` (may be fractional)."""
    final_factor: float = 0.0
    """Learning rate at the end of training, as a fraction of the peak ``lr``."""

    def validate(self) -> SchedConfig:
        """Check names and ranges; raises ``ValueError`` naming the field."""
        if self.name not in SCHEDULES:
            raise ValueError(
                f"unknown schedule sched.name={self.name!r}; choose one of {list(SCHEDULES)}"
            )
        if self.warmup_epochs < 0 or not 0 <= self.final_factor <= 1:
            raise ValueError(
                f"sched.warmup_epochs must be >= 0 and sched.final_factor in [0, 1], "
                f"got {self.warmup_epochs}, {self.final_factor}"
            )
        return self


def _is_norm(module: nn.Module) -> bool:
    """A normalisation layer: torch's norms, or any module keeping a ``running_mean`` buffer
    (custom BN variants such as the PruningNet's per-choice BN, whose parameters are 2-D)."""
    norms = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    return isinstance(module, norms) or "running_mean" in dict(module.named_buffers(recurse=False))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups: weights with ``weight_decay``; parameters of normalisation layers,
    biases and other 1-D parameters without it."""
    decay, no_decay = [], []
    for module in model.modules():
        norm = _is_norm(module)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            skip = norm or name == "bias" or p.ndim <= 1
            (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD over :func:`param_groups` of ``model``."""
    cfg.validate()
    return torch.optim.SGD(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def lr_factor(cfg: SchedConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak lr used by optimisation step ``step`` (0-based) of ``total_steps``."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    f = cfg.final_factor
    if cfg.name == "cosine":
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.name == "linear":
        return 1 - (1 - f) * t
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    """A per-step :class:`LambdaLR` following :func:`lr_factor` (call ``.step()`` every step)."""
    cfg.validate()
    return LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total_steps, steps_per_epoch))
