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

Residual blocks get a factor too (``blocks``, the paper's block-level selection, sec. 3.2): it
scales the output of the block's body, is solved by the same APG and folded into the body's last
BN; a block whose factor reaches zero computes its shortcut alone (:meth:`SSS.dead_blocks`), and
its inner genes (the widths only its body holds) score zero.  On a space with depth genes
(``space.depth=true``) the prune removes such a block, as the paper does: its depth gene is off,
the pruned network has no body there, and allocation spends the FLOPs it freed on the other
genes.  On a space without them, or for a block with a conv shortcut (which a depth gene cannot
remove), the block stays at the space's smallest width, computing zeros.  The paper weighs the
sparsity of each kind of structure separately; ``block_gamma`` is the blocks' weight (default:
``gamma``), so blocks can be selected without thinning the channels as hard.

A gene outside every residual body all of whose factors reach zero (a stage's channels, say)
leaves a network that computes a constant and cannot be fine-tuned (its folded BNs output zero, and so
does the ReLU's gradient): :class:`DeadNetworkError` names the genes and the sparsity weight
instead of handing that network on.  Departure: the paper trains from scratch for a whole
schedule (here a few steps from a trained network).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class DeadNetworkError(ValueError):
    """Sparsity drove every factor of a gene to zero: the pruned network would be constant."""


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
        blocks: bool = True,
        block_gamma: float | None = None,
    ) -> None:
        block_gamma = gamma if block_gamma is None else block_gamma
        if gamma < 0 or block_gamma < 0 or not factor_lr > 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"needs gamma >= 0, block_gamma >= 0, factor_lr > 0 and momentum in [0, 1), got "
                f"{gamma}, {block_gamma}, {factor_lr}, {momentum}"
            )
        self.gamma, self.block_gamma = float(gamma), float(block_gamma)
        self.steps, self.lr = int(steps), float(lr)
        self.factor_lr, self.momentum, self.blocks = float(factor_lr), float(momentum), blocks
        self.block_factors: dict[int, float] = {}
        """Residual block index -> its final factor (after :meth:`score`)."""

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        device = next(model.parameters()).device
        genes = {g.name: torch.ones(g.max_channels, device=device) for g in space.genes}
        ends = residual_ends(model, space) if self.blocks else {}
        blocks = {i: torch.ones(1, device=device) for i in ends}
        factors = [f.requires_grad_() for f in (*genes.values(), *blocks.values())]
        weights = [self.gamma] * len(genes) + [self.block_gamma] * len(blocks)
        velocity = [torch.zeros_like(f) for f in factors]
        sparse = [f.detach().clone() for f in factors]

        def on_step() -> None:
            with torch.no_grad():
                for k, f in enumerate(factors):
                    grad = f.grad if f.grad is not None else torch.zeros_like(f)
                    sparse[k] = apg_step(
                        f, velocity[k], grad, self.factor_lr, weights[k], self.momentum
                    )
                    f.grad = None

        with gene_masks(model, space, genes), _scaled(ends, blocks):
            train_steps(model, batches, self.steps, self.lr, on_step=on_step)
        gene_final = dict(zip(genes, sparse[: len(genes)], strict=True))
        block_final = dict(zip(blocks, sparse[len(genes) :], strict=True))
        with torch.no_grad():
            for g, layers in producers(space).items():
                for layer in layers:
                    _fold(conv_bn(model, layer)[1], gene_final[g])
            for i, bn in ends.items():
                _fold(bn, block_final[i])
        scores = {g: f.abs().cpu() for g, f in gene_final.items()}
        self.block_factors = {i: float(f) for i, f in block_final.items()}
        # genes inside residual bodies, by block: the shortcut carries on around them
        bodies = {
            i: space.arch.inner_genes(i) for i, b in enumerate(space.arch.blocks) if b.residual
        }
        inner = {g for i in self.dead_blocks() for g in bodies[i]}
        in_bodies = set().union(*bodies.values())
        dead = [g for g, s in scores.items() if not s.any() and g not in in_bodies]
        if dead:
            raise DeadNetworkError(
                f"sss: gamma={self.gamma:g} drove every factor of gene(s) {dead} to zero in "
                f"{self.steps} steps, so the pruned network would compute a constant; lower "
                "prune.options.gamma (block_gamma sets the blocks' weight apart)"
            )
        for gene in inner:
            scores[gene] = torch.zeros_like(scores[gene])
        return scores

    def dead_blocks(self) -> set[int]:
        """The residual blocks whose final factor is exactly zero."""
        return {i for i, f in self.block_factors.items() if f == 0.0}


def residual_ends(model: nn.Module, space: ChannelSpace) -> dict[int, nn.BatchNorm2d]:
    """Residual block index -> the BN ending its body (what a block factor scales)."""
    return {
        i: model.get_submodule(f"features.{i}.body.{len(b.body) - 1}")[1]
        for i, b in enumerate(space.arch.blocks)
        if b.residual
    }


def _fold(bn: nn.BatchNorm2d, factor: torch.Tensor) -> None:
    """Scale a BN's output by ``factor`` for good (its gamma and beta)."""
    bn.weight.mul_(factor)
    bn.bias.mul_(factor)


@contextlib.contextmanager
def _scaled(ends: dict[int, nn.BatchNorm2d], factors: dict[int, torch.Tensor]) -> Iterator[None]:
    """Within the block, each residual body's output is multiplied by its block factor."""
    handles = [
        bn.register_forward_hook(lambda m, a, out, f=factors[i]: out * f) for i, bn in ends.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
