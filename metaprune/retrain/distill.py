"""Knowledge distillation for retraining (Hinton et al., 2015).

Beyond MetaPruning (Liu et al., ICCV 2019), which retrains the pruned network with labels only:
with ``retrain.kd.teacher`` the loss is ``(1 - w) * CE(student, y) + w * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``.  The teacher is a pruned network saved by
:func:`~metaprune.export.export_model` (``pruned.pt`` or its export directory, e.g. the retrained
max-width network), read with :func:`~metaprune.export.load_pruned` and checked to take this
space's inputs and classes.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.engine.trainer import LossFn, StepFn
from metaprune.export import load_pruned
from metaprune.space import ChannelSpace


def load_teacher(path: str | os.PathLike, space: ChannelSpace) -> nn.Module:
    """The KD teacher (see :class:`KDConfig`), checked to take this space's inputs and classes."""
    teacher = load_pruned(path)
    x = torch.zeros(1, *space.input_shape)
    try:
        with torch.no_grad():
            out = teacher(x)
    except RuntimeError as e:
        raise ValueError(
            f"retrain.kd.teacher {path} does not accept inputs of shape {space.input_shape}: {e}"
        ) from e
    if out.shape[1] != space.num_classes:
        raise ValueError(
            f"retrain.kd.teacher {path} has {out.shape[1]} classes, the data {space.num_classes}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """``(1 - weight) * loss_fn(student, y) + weight * T^2 * KL(teacher_T || student_T)``
    (Hinton et al., 2015), the KL term in float32 and averaged over the batch."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student.float() / t, dim=1),
        F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - weight) * loss_fn(student, y) + weight * t * t * kl


def kd_step(teacher: nn.Module, temperature: float, weight: float) -> StepFn:
    """The training step with distillation from ``teacher`` (kept in eval mode, no gradients)."""

    def step(model, x, y, rng, loss_fn):
        logits = model(x)
        with torch.no_grad():
            target = teacher(x)
        return kd_loss(logits, target, y, loss_fn, temperature, weight)

    return step
