"""Shared test fixtures: tiny channel spaces of every registered family."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from metaprune import create_space
from metaprune.space import ChannelConfig, ChannelSpace

# tiny models gain nothing from intra-op threads, and on a shared 2-core machine oversubscribed
# OpenMP threads slow every test many times over
torch.set_num_threads(1)

# small, odd input sizes exercise the spatial arithmetic of strided convs and pooling
TINY_INPUT = {"cifar": {"input_size": 14, "in_chans": 1}, "imagenet": {"input_size": 37}}


@pytest.fixture
def tiny_space() -> Callable[..., ChannelSpace]:
    """``tiny_space(name, stem="cifar", **opts)``: a space with width_mult 1/8 and small inputs."""

    def make(name: str, stem: str = "cifar", **opts: Any) -> ChannelSpace:
        kw: dict[str, Any] = {"stem": stem, "width_mult": 0.125, "num_classes": 7}
        kw.update(TINY_INPUT[stem])
        kw.update(opts)
        return create_space(name, **kw)

    return make


class WidthScorer:
    """A cheap analytic stand-in for the search proxy: the mean width ratio (wider is better)."""

    def score(self, configs: Sequence[ChannelConfig]) -> list[float]:
        return [sum(c.ratios()) / len(c.indices) for c in configs]


def ddp_env(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` of ``world`` (one thread, loopback)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
