"""``lrf``: linearly replaceable filters with weights compensation (Joo et al., "Linearly
Replaceable Filters for Deep Network Channel Pruning", AAAI 2021, sec. 3).

A channel that is well approximated by a linear combination of the other channels of its layer is
replaceable: remove it and let the next layer take its contribution from the channels kept, by
adding to each kept channel's weights the removed one's times its coefficient (weights
compensation), so the next layer's output changes least.

How it is done here: on the features every dense consumer of a gene reads (the next convs and
the classifier; ``batches`` calibration batches, eval mode), the covariance ``S`` of the gene's
channels gives, in closed form, the residual variance of regressing channel ``c`` on all others,
``r_c = 1 / (S^-1)_cc``; a channel's score is, summed over its consumers, the output energy
left after compensation, ``||W[:, c]||^2 r_c``, divided by the consumer's output energy
``sum_c ||W[:, c]||^2 S_cc`` (one scale for every gene), ranked by one global threshold.  On
pruning, the removed channels ``R`` are regressed on the kept ``K`` by least squares with an
intercept, ``a_R ~ L^T (a_K - mu_K) + mu_R``, and each consumer's weights become
``W_K + W_R L^T``, the intercept going into its BN's running mean (a conv) or bias (the
classifier).  Departures: the paper fits the linear combination on the filters' weights and
compensates one layer at a time with fine-tuning between; here it is fitted on the features
(the quantity the compensation must reproduce; ``ridge`` regularises ``S``), all genes at once,
and a gene read only by a depthwise conv (which cannot mix channels) is pruned uncompensated at
that conv.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from metaprune.arch import Layer
from metaprune.prune.channels import Keep, Scores, consumers, prune_state
from metaprune.prune.criterion import Batches, Criterion, register_criterion
from metaprune.space import ChannelSpace


class _Moments:
    """Running sums of the features one consumer reads: count, sum, sum of outer products."""

    def __init__(self, channels: int) -> None:
        self.n = 0
        self.s1 = torch.zeros(channels, dtype=torch.float64)
        self.s2 = torch.zeros(channels, channels, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1).cpu()
        self.n += rows.shape[1]
        self.s1 += rows.sum(1)
        self.s2 += rows @ rows.T

    def mean_cov(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.s1 / self.n
        cov = self.s2 / self.n - torch.outer(mu, mu)
        eps = ridge * float(cov.diagonal().mean().clamp_min(1e-12))
        return mu, cov + eps * torch.eye(len(mu), dtype=cov.dtype)


def _module(model: nn.Module, layer: Layer) -> nn.Module:
    return model.get_submodule(layer.name if layer.kind == "linear" else f"{layer.name}.0")


def _weight_name(layer: Layer) -> str:
    return f"{layer.name}.weight" if layer.kind == "linear" else f"{layer.name}.0.weight"


@register_criterion
class LRF(Criterion):
    name = "lrf"
    normalise = None

    def __init__(self, batches: int = 8, ridge: float = 1e-3, compensate: bool = True) -> None:
        if batches < 1 or not ridge > 0:
            raise ValueError(f"needs batches >= 1 and ridge > 0, got {batches}, {ridge}")
        self.batches, self.ridge, self.compensate = int(batches), float(ridge), bool(compensate)
        self._moments: dict[str, dict[str, _Moments]] = {}

    def _collect(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> None:
        self._moments = {g: {} for g in consumers(space)}
        handles = []

        def hook(m: _Moments) -> Callable:
            return lambda module, args: m.add(args[0])

        for g, layers in consumers(space).items():
            size = space.genes[space.gene_index[g]].max_channels
            for layer in layers:
                m = self._moments[g].setdefault(layer.name, _Moments(size))
                handles.append(_module(model, layer).register_forward_pre_hook(hook(m)))
        model.eval()
        try:
            with torch.no_grad():
                for x, _ in itertools.islice(batches, self.batches):
                    model(x)
        finally:
            for h in handles:
                h.remove()

    def score(self, model: nn.Module, space: ChannelSpace, batches: Batches) -> Scores:
        self._collect(model, space, batches)
        state, cons = model.state_dict(), consumers(space)
        out = {}
        for g in space.genes:
            total = torch.zeros(g.max_channels, dtype=torch.float64)
            for layer in cons[g.name]:
                _, cov = self._moments[g.name][layer.name].mean_cov(self.ridge)
                w = state[_weight_name(layer)].double().cpu()
                energy = w.transpose(0, 1).reshape(w.shape[1], -1).pow(2).sum(1)
                residual = 1.0 / torch.linalg.inv(cov).diagonal()
                total += energy * residual / (energy * cov.diagonal()).sum().clamp_min(1e-12)
            out[g.name] = total.float()
        return out

    def transfer(
        self, model: nn.Module, space: ChannelSpace, keep: Keep, batches: Batches
    ) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if not self.compensate:
            return prune_state(space, state, keep)
        if not self._moments:
            self._collect(model, space, batches)
        for g in space.genes:
            kept = keep[g.name]
            removed = torch.tensor(
                sorted(set(range(g.max_channels)) - set(kept.tolist())), dtype=torch.long
            )
            if not len(removed):
                continue
            for layer in consumers(space)[g.name]:
                mu, cov = self._moments[g.name][layer.name].mean_cov(self.ridge)
                coef = torch.linalg.solve(cov[kept][:, kept], cov[kept][:, removed])  # (K, R)
                const = mu[removed] - coef.T @ mu[kept]  # (R,)
                compensate_layer(state, layer, kept, removed, coef, const)
        return prune_state(space, state, keep)


def compensate_layer(
    state: dict[str, torch.Tensor],
    layer: Layer,
    kept: torch.Tensor,
    removed: torch.Tensor,
    coef: torch.Tensor,
    const: torch.Tensor,
) -> None:
    """In ``state``: consumer ``layer`` takes removed inputs ``a_R = coef^T a_K + const`` from
    the kept ones (its weights on ``kept`` and its BN running mean, or bias, updated)."""
    name = _weight_name(layer)
    shape, dtype = state[name].shape, state[name].dtype
    w = state[name].double().reshape(shape[0], shape[1], -1)  # (out, in, taps)
    wr = w[:, removed]
    w[:, kept] += torch.einsum("orx,kr->okx", wr, coef.to(w.device))
    shift = torch.einsum("orx,r->o", wr, const.to(w.device))
    state[name] = w.reshape(shape).to(dtype)
    if layer.kind == "linear":
        bias = f"{layer.name}.bias"
        state[bias] = (state[bias].double() + shift).to(state[bias].dtype)
    else:
        mean = f"{layer.name}.1.running_mean"
        state[mean] = (state[mean].double() - shift).to(state[mean].dtype)
