"""A short training loop for the criteria that learn their scores (network slimming, SSS).

Network slimming (Liu et al., ICCV 2017, sec. 3.2) and sparse structure selection (Huang & Wang,
ECCV 2018, sec. 3.2) train the network with a sparsity penalty before pruning; here that training
is a few SGD steps on the network's training batches (the papers train for whole schedules), in
train mode, with cross-entropy plus the criterion's penalty; learnable factors outside the
network get their own update (``on_step``, the SSS paper's proximal gradient).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.prune.criterion import Batches


def train_steps(
    model: nn.Module,
    batches: Batches,
    steps: int,
    lr: float,
    penalty: Callable[[], torch.Tensor] | None = None,
    on_step: Callable[[], None] | None = None,
    momentum: float = 0.9,
) -> None:
    """``steps`` SGD steps of ``model`` on ``batches``: loss = cross-entropy + ``penalty()``;
    ``on_step`` runs after each step (gradients of other tensors still in place)."""
    if steps < 0 or not lr > 0:
        raise ValueError(f"sparsity training needs steps >= 0 and lr > 0, got {steps}, {lr}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    for x, y in itertools.islice(batches, steps):
        loss = F.cross_entropy(model(x), y)
        if penalty is not None:
            loss = loss + penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step()
    model.eval()
