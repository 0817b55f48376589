"""Shared test fixtures: tiny channel spaces of every registered family, analytic stand-ins for
the search proxy (cheap scorers), a small search for the strategy tests, and torchrun-like ranks
(their environment, spawning them)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
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


SMALL_SEARCH: dict[str, Any] = {
    "population": 10,
    "generations": 5,
    "parents": 3,
    "mutation_children": 4,  # ignored by random and rl (validated all the same)
    "crossover_children": 4,
    "tensorboard": False,
}
"""The strategy tests' search: 10 candidates x 5 generations a stage."""


@pytest.fixture(scope="module")
def search_space() -> ChannelSpace:
    """The space the strategy tests search: ResNet-20 x0.5 at 8x8 px, 5 classes."""
    return create_space("resnet20", width_mult=0.5, input_size=8, num_classes=5)


def run_small(space: ChannelSpace, out: Any, scorer: Any = None, **kw: Any) -> tuple[Any, Any]:
    """A :data:`SMALL_SEARCH` (``kw`` over it) of ``space`` into ``out`` scored by ``scorer``
    (an :class:`Analytic` by default): the finished run and the scorer."""
    from metaprune.search import SearchConfig, default_costs, run_search

    scorer = scorer or Analytic(space)
    cfg = SearchConfig(**{**SMALL_SEARCH, **kw})
    return run_search(space, scorer, default_costs(space), cfg, out), scorer


class WidthScorer:
    """A cheap analytic stand-in for the search proxy: the mean width ratio (wider is better)."""

    def score(self, configs: Sequence[ChannelConfig]) -> list[float]:
        return [sum(c.ratios()) / len(c.indices) for c in configs]


class Analytic:
    """A smooth, saturating function of the width ratios (genes weighted unequally), counting
    how often each network is scored; ``fail_at`` raises on that call to simulate a kill."""

    def __init__(self, space, fail_at: int | None = None) -> None:
        self.space = space
        self.w = np.linspace(2.0, 0.5, len(space.genes))
        self.counts: Counter = Counter()
        self.calls = 0
        self.fail_at = fail_at

    def score(self, configs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        out = []
        for c in configs:
            self.counts[c.width_tuple()] += 1
            r = np.array(c.ratios())
            out.append(float(self.w @ np.sqrt(r) / self.w.sum()))
        return out


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


def spawn_ranks(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Run ``fn(rank, world, port, *args)`` in ``world`` processes on a free loopback port (each
    rank calls :func:`ddp_env` with them)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(fn, args=(world, port, *args), nprocs=world)


def kill_in_epoch_2(cfg: Any, out_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the train stage ``train(cfg, out_dir)`` (one step per epoch) and kill it in its
    second step, whatever the step (the paper's or full-net supervision): a checkpoint of epoch
    1 is left, no ``pruningnet.pt``."""
    import metaprune.pruningnet.training as mtraining
    from metaprune.train import train

    real = mtraining.training_step

    def killing_step(*args: Any) -> Callable:
        step, calls = real(*args), []

        def wrapped(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:  # the step of epoch 2
                raise KeyboardInterrupt
            return step(*args)

        return wrapped

    monkeypatch.setattr(mtraining, "training_step", killing_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir)
    monkeypatch.setattr(mtraining, "training_step", real)
    assert not (out_dir / "pruningnet.pt").exists()


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Randomise BN statistics and affine parameters and the classifier's weights, so BN is not
    the identity in eval mode and the logits differ between inputs; returns ``model`` in eval."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    model.classifier.weight.data.normal_(0.0, 1.0, generator=g)
    return model.eval()
