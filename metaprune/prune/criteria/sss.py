"""``sss``: sparse structure selection, learnable scaling factors on channels solved by the
modified accelerated proximal gradient (Huang & Wang, "Data-Driven Sparse Structure Selection
for Deep Neural Networks", ECCV 2018, sec. 3.1-3.3).

Every channel of every gene gets a scaling factor ``lambda`` (initially 1) multiplying its output
(coupled channels share one: the paper's group factors); the network trains ``steps`` SGD steps
on cross-entropy while the factors take the paper's modified APG step on
``G(lambda) + gamma * ||lambda||_1`` (:func:`apg_step`), whose soft threshold drives unimportant
factors to exactly zero.  The last proximal point (the sparse iterate) is then folded into the
producers' BNs (gamma and beta times lambda), and a channel's score is ``|lambda|``: a zero
factor is a channel whose removal changes nothing.  Widths are allocated by one global
threshold on the factors.

Left out: the paper's factors on residual blocks (removing a whole block) need per-block depth
genes in the channel space, which it does not have yet; and the paper trains from scratch for a
whole schedule (here a few steps from a trained network).
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.prune.channels import Scores, conv_bn, gene_masks, producers
from metaprune.prune.criterion import Batches, Criterion, register_criterion
from metaprune.prune.training import train_steps
from metaprune.space import ChannelSpace


def soft_threshold(z: torch.Tensor, t: float) -> torch.Tensor:
    """The proximal operator of ``t * ||.||_1``: ``sign(z) * max(|z| - t, 0)``."""
    return torch.sign(z) * torch.clamp(z.abs() - t, min=0.0)


def apg_step(
    lam: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, lr: float, gamma: float, mu: float
) -> torch.Tensor:
    """One step of the paper's modified APG (sec. 3.3), in place of ``lam`` and ``v``; returns
    the proximal point ``S(z)``, the sparse iterate.

    ``lam`` holds the look-ahead point ``lambda'`` the network runs with and at which ``grad``
    was taken: ``z = lambda' - lr * grad``, ``v <- S(z) - lambda' + mu * v``,
    ``lambda' <- S(z) + mu * v``, with ``S`` the soft threshold at ``lr * gamma``, so a factor
    whose ``|z|`` stays under the threshold is exactly zero in ``S(z)``."""
    s = soft_threshold(lam - lr * grad, lr * gamma)
    v.copy_(s - lam + mu * v)
    lam.copy_(s + mu * v)
    return s


@register_criterion
class SSS(Criterion):
    name = "sss"
    normalise = None

    def __init__(
        self,
        gamma: float = 0.01,
        steps: int = 100,
        lr: float = 0.01,
        factor_lr: float = 0.1,
        momentum: float = 0.9,
    ) -> None:
        if gamma < 0 or not factor_lr > 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"needs gamma >= 0, factor_lr > 0 and momentum in [0, 1), got {gamma}, "
                f"{factor_lr}, {momentum}"
            )
        self.gamma, self.steps, self.lr = float(gamma), int(steps), float(lr)
        self.factor_lr, self.momentum = float(factor_lr), float(momentum)

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        device = next(model.parameters()).device
        factors = {
            g.name: torch.ones(g.max_channels, device=device, requires_grad=True)
            for g in space.genes
        }
        velocity = {g: torch.zeros_like(f) for g, f in factors.items()}
        sparse = {g: f.detach().clone() for g, f in factors.items()}

        def on_step() -> None:
            with torch.no_grad():
                for g, f in factors.items():
                    grad = f.grad if f.grad is not None else torch.zeros_like(f)
                    sparse[g] = apg_step(
                        f, velocity[g], grad, self.factor_lr, self.gamma, self.momentum
                    )
                    f.grad = None

        with gene_masks(model, space, factors):
            train_steps(model, batches, self.steps, self.lr, on_step=on_step)
        with torch.no_grad():
            for g, layers in producers(space).items():
                for layer in layers:
                    bn = conv_bn(model, layer)[1]
                    bn.weight.mul_(sparse[g])
                    bn.bias.mul_(sparse[g])
        return {g: f.abs().cpu() for g, f in sparse.items()}
