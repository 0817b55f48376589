"""Stochastic structure sampling: the configs a PruningNet trains on at each step.

MetaPruning (Liu et al., ICCV 2019, sec. 3.2) draws, at every iteration, a random network
encoding with each layer's width chosen uniformly (``mode="uniform"``).  Uniform per-gene choices
concentrate the FLOPs of the sampled networks around the middle of the range (a sum of many
independent terms), so the smallest and largest networks are rarely trained.  Two options depart
from the paper to counter that:

* ``mode="flops_uniform"``: draw a target FLOPs count uniformly in [FLOPs(min), FLOPs(max)], draw a
  bounded batch of candidates from the proposal of :mod:`metaprune.cost.proposal` aimed at it (a
  shared width level plus per-gene jitter, the same proposal the search draws narrow bands
  from), and keep the candidate nearest to the target, so the sampled FLOPs are spread (close
  to) uniformly over the range;
* ``sandwich=True``: also train the max and min configs every step (the "sandwich rule" of
  slimmable networks, Yu & Huang, ICCV 2019).
"""

from __future__ import annotations

import numpy as np

from metaprune.cost.flops import cost_model
from metaprune.cost.proposal import propose
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
        target = rng.uniform(*self._range)
        return propose(
            self.space,
            self._cost.flops_many,
            (target, target),
            rng,
            1,
            batch=self.candidates,
            max_draws=self.candidates,
            nearest=True,
        )[0]
