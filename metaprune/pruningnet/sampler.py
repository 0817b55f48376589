"""Stochastic structure sampling: the configs a PruningNet trains on at each step.

MetaPruning (Liu et al., ICCV 2019, sec. 3.2) draws, at every iteration, a random network
encoding with each layer's width chosen uniformly (``mode="uniform"``).  Uniform per-gene choices
concentrate the FLOPs of the sampled networks around the middle of the range (a sum of many
independent terms), so the smallest and largest networks are rarely trained.  Two options depart
from the paper to counter that:

* ``mode="flops_uniform"``: draw a target FLOPs count uniformly in [FLOPs(min), FLOPs(max)], draw a
  bounded batch of candidates from a proposal that covers the whole range (a shared width level
  plus per-gene jitter), and keep the candidate nearest to the target, so the sampled FLOPs are
  spread (close to) uniformly over the range;
* ``sandwich=True``: also train the max and min configs every step (the "sandwich rule" of
  slimmable networks, Yu & Huang, ICCV 2019).
"""

from __future__ import annotations

import numpy as np

from metaprune.cost.flops import cost_model
from metaprune.space import ChannelConfig, ChannelSpace, RngLike, as_rng

SAMPLER_MODES = ("uniform", "flops_uniform")


class ConfigSampler:
    """Samples the configs of one training step: ``sample(rng) -> list[ChannelConfig]``."""

    def __init__(
        self,
        space: ChannelSpace,
        mode: str = "uniform",
        sandwich: bool = False,
        candidates: int = 64,
    ) -> None:
        if mode not in SAMPLER_MODES:
            raise ValueError(f"unknown sampler mode {mode!r}; choose one of {list(SAMPLER_MODES)}")
        if candidates < 1:
            raise ValueError(f"sampler candidates must be >= 1, got {candidates}")
        self.space = space
        self.mode = mode
        self.sandwich = sandwich
        self.candidates = candidates
        if mode == "flops_uniform":
            self._cost = cost_model(space)
            self._range = (self._cost.flops(space.min()), self._cost.flops(space.max()))

    def sample(self, rng: RngLike = None) -> list[ChannelConfig]:
        """The configs to train on in one step: one random config, then max and min if sandwich."""
        r = as_rng(rng)
        cfg = self.space.sample(r) if self.mode == "uniform" else self._flops_uniform(r)
        return [self.space.max(), cfg, self.space.min()] if self.sandwich else [cfg]

    def _flops_uniform(self, rng: np.random.Generator) -> ChannelConfig:
        n_choices, n_genes = len(self.space.ratios), len(self.space.genes)
        lo, hi = self._range
        target = rng.uniform(lo, hi)
        # proposal: a shared level in [0, n_choices - 1] plus per-gene jitter, so candidates
        # reach both ends of the FLOPs range (uniform per-gene draws almost never do)
        level = rng.uniform(0, n_choices - 1, (self.candidates, 1))
        jitter = rng.normal(0.0, n_choices / 6, (self.candidates, n_genes))
        idx = np.clip(np.rint(level + jitter), 0, n_choices - 1).astype(np.int64)
        configs = [self.space.config(row) for row in idx]
        flops = self._cost.flops_many(configs)
        return configs[int(np.argmin(np.abs(flops - target)))]
