"""Exact analytic FLOPs (multiply-accumulates) and parameter counts of a channel configuration.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) rejects search candidates that violate a FLOPs
constraint, so every candidate is counted; counting must be exact and cheap.  Every cost here is a
sum over the family's layers of ``(coef * w[a] * w[b] + lin * w[c]) * w[d]``, where ``w`` is the
gene widths followed by the fixed channel counts, and ``w[d]`` is the layer's block's depth gene
(0 or 1: the block's body is removed or present) in a space with depth genes, else the constant 1;
the coefficient and index arrays are built once per space, so a count is a handful of numpy
operations (batched over many configs at once).

Conventions: FLOPs are the MACs of conv and linear layers (what ``torch.utils.flop_counter``
reports, divided by 2); parameters are ``sum(p.numel())`` of ``build_pruned`` (conv weights without
bias, BN weight and bias, classifier weight and bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from operator import getitem

import numpy as np

from metaprune.space import ChannelConfig, ChannelSpace


class CostModel:
    """FLOPs and parameter counts of the configs of one space, vectorised over configs."""

    def __init__(self, space: ChannelSpace) -> None:
        self.space = space
        fixed: dict[int, int] = {1: 0}  # fixed channel count -> slot in the constant part of w
        for layer in space.arch.layers:
            for d in (layer.cin, layer.cout):
                if isinstance(d, int):
                    fixed.setdefault(d, len(fixed))
        n_genes = len(space.genes)
        self._consts = np.array(list(fixed), dtype=np.float64)

        def slot(d: str | int) -> int:
            return space.gene_index[d] if isinstance(d, str) else n_genes + fixed[d]

        body_of = {i: slot(d) for d, i in space.depth_blocks.items()}  # block -> its depth gene
        a, b, fl, pa, lin_idx, lin, dep = [], [], [], [], [], [], []
        for layer in space.arch.layers:
            dep.append(body_of.get(layer.block, slot(1)))
            cin = 1 if layer.depthwise else layer.cin
            a.append(slot(cin))
            b.append(slot(layer.cout))
            kk = layer.kernel * layer.kernel
            fl.append(kk * layer.out_hw[0] * layer.out_hw[1])
            pa.append(kk)
            lin_idx.append(slot(layer.cout))
            lin.append(2 if layer.kind == "conv" else 1)  # BN weight + bias, or linear bias
        self._a, self._b, self._d = np.array(a), np.array(b), np.array(dep)
        self._flops_coef = np.array(fl, dtype=np.float64)
        self._param_coef = np.array(pa, dtype=np.float64)
        self._lin_idx, self._lin_coef = np.array(lin_idx), np.array(lin, dtype=np.float64)
        r = max(len(g.choices) for g in space.genes)  # depth genes' 2 choices padded to R
        self._choices = np.array(
            [(*g.choices, *[g.choices[-1]] * (r - len(g.choices))) for g in space.genes],
            dtype=np.float64,
        )  # (G, R)
        self._gene_rows = np.arange(n_genes)
        # single-config fast path: the same sums in exact Python ints (numpy's per-call overhead
        # dominates a single ~50-layer count); a bias term c * w[k] is c * w[k] * w[slot(1)]
        self._choice_lists = [g.choices for g in space.genes]
        self._const_list = list(fixed)
        self._flops_terms = list(zip(fl, a, b, dep, strict=True))
        self._param_terms = list(
            zip(pa + lin, a + lin_idx, b + [slot(1)] * len(lin), dep + dep, strict=True)
        )

    def _w(self, indices: np.ndarray) -> np.ndarray:
        """(N, G + K) widths: gene widths of each config, then the fixed counts."""
        genes = self._choices[self._gene_rows, indices]  # (N, G)
        consts = np.broadcast_to(self._consts, (indices.shape[0], self._consts.size))
        return np.concatenate([genes, consts], axis=1)

    def _indices(self, configs: Sequence[ChannelConfig]) -> np.ndarray:
        for c in configs:
            self.space.check(c)
        n = len(self.space.genes)
        return np.array([c.indices for c in configs], dtype=np.int64).reshape(len(configs), n)

    def flops_many(self, configs: Sequence[ChannelConfig]) -> np.ndarray:
        """FLOPs (MACs) of each config, as int64."""
        w = self._w(self._indices(configs))
        quad = w[:, self._a] * w[:, self._b] * w[:, self._d]
        return (quad @ self._flops_coef).round().astype(np.int64)

    def params_many(self, configs: Sequence[ChannelConfig]) -> np.ndarray:
        """Parameter count of each config, as int64."""
        w = self._w(self._indices(configs))
        depth = w[:, self._d]
        quad = w[:, self._a] * w[:, self._b] * depth @ self._param_coef
        return (quad + w[:, self._lin_idx] * depth @ self._lin_coef).round().astype(np.int64)

    def _w_list(self, config: ChannelConfig) -> list[int]:
        self.space.check(config)
        return list(map(getitem, self._choice_lists, config.indices)) + self._const_list

    @staticmethod
    def _sum(terms: list[tuple[int, int, int, int]], w: list[int]) -> int:
        return sum(c * w[i] * w[j] * w[d] for c, i, j, d in terms)

    def flops(self, config: ChannelConfig) -> int:
        """FLOPs (MACs) of one config."""
        return self._sum(self._flops_terms, self._w_list(config))

    def params(self, config: ChannelConfig) -> int:
        """Parameter count of one config."""
        return self._sum(self._param_terms, self._w_list(config))


@cache
def _cost_model(space: ChannelSpace) -> CostModel:
    return CostModel(space)


def cost_model(space: ChannelSpace) -> CostModel:
    """The (cached) :class:`CostModel` of ``space``."""
    return _cost_model(space)


def count_flops(space: ChannelSpace, config: ChannelConfig) -> int:
    """Multiply-accumulates of the conv and linear layers of ``config`` at the space's input."""
    return cost_model(space).flops(config)


def count_params(space: ChannelSpace, config: ChannelConfig) -> int:
    """``sum(p.numel())`` of ``build_pruned(space, config)``, computed from the widths."""
    return cost_model(space).params(config)
