"""Where each gene's channels live in a network, and copying the kept ones into a smaller one.

Pruning a trained network (e.g. Li et al., ICLR 2017, sec. 3.1; Liu et al., ICML 2021, sec. 3.1)
removes a channel from every layer that produces it (the conv's output filter and its BN) and
from every layer that reads it (the next conv's input slice, or the classifier's column).  The
channel space already knows which channels are coupled: a gene is one group, every layer of the
architecture description naming it (:mod:`metaprune.arch`) holds the same channels, so channel
``i`` of gene ``g`` is one unit (residual adds and depthwise convs included).  Here:

* :func:`producers` / :func:`consumers`: the layers that write / read a gene's channels;
* :func:`prune_state`: the state dict of ``build_pruned(space, config)`` holding the kept
  channels' weights of a full-width state dict (no masks);
* :func:`gene_masks`: multiply every producer's BN output by a per-gene factor (forward hooks),
  what the data-driven criteria differentiate or learn;
* :func:`drop_removed`: a state dict less the bodies of the blocks a config of a space with
  depth genes removes (sparse structure selection's block removal, Huang & Wang, ECCV 2018).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from metaprune.arch import Layer
from metaprune.space import ChannelConfig, ChannelSpace

Keep = dict[str, torch.Tensor]
"""Gene name -> the kept channel indices, ascending (a LongTensor)."""

Scores = dict[str, torch.Tensor]
"""Gene name -> importance of each of its channels (float, length = the gene's maximum)."""


def producers(space: ChannelSpace) -> dict[str, list[Layer]]:
    """Gene -> the conv layers whose output channels are the gene's (depthwise ones included)."""
    out: dict[str, list[Layer]] = {g.name: [] for g in space.genes}
    for layer in space.arch.layers:
        if layer.kind == "conv" and isinstance(layer.cout, str):
            out[layer.cout].append(layer)
    return out


def consumers(space: ChannelSpace) -> dict[str, list[Layer]]:
    """Gene -> the layers that read the gene's channels through a dense input (not depthwise:
    a depthwise conv is one of the gene's producers)."""
    out: dict[str, list[Layer]] = {g.name: [] for g in space.genes}
    for layer in space.arch.layers:
        if not layer.depthwise and isinstance(layer.cin, str):
            out[layer.cin].append(layer)
    return out


def conv_bn(model: nn.Module, layer: Layer) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The conv and BN modules of conv ``layer`` in a :class:`~metaprune.models.PrunedNet`."""
    unit = model.get_submodule(layer.name)
    return unit[0], unit[1]


def _index(dim: str | int, keep: Keep) -> torch.Tensor | None:
    return keep[dim] if isinstance(dim, str) else None


def prune_state(
    space: ChannelSpace, state: Mapping[str, torch.Tensor], keep: Keep
) -> dict[str, torch.Tensor]:
    """The state dict of the network that keeps channels ``keep`` of the full-width ``state``
    (of ``build_pruned(space, space.max())``): every conv's output filters and input slices,
    every BN's entries, the classifier's columns, copied (new tensors)."""
    for g in space.genes:
        k = keep[g.name]
        if k.dim() != 1 or (len(k) and (k.min() < 0 or k.max() >= g.max_channels)):
            raise ValueError(f"gene {g.name!r}: kept indices must lie in [0, {g.max_channels})")
    out = {k: v.detach().clone() for k, v in state.items()}
    for layer in space.arch.layers:
        rows, cols = _index(layer.cout, keep), _index(layer.cin, keep)
        if layer.kind == "linear":
            w = f"{layer.name}.weight"
            out[w] = state[w][:, cols].clone() if cols is not None else out[w]
            continue
        w = f"{layer.name}.0.weight"
        t = state[w]
        if rows is not None:
            t = t[rows]
        if cols is not None and not layer.depthwise:
            t = t[:, cols]
        out[w] = t.clone()
        if rows is not None:
            for p in ("weight", "bias", "running_mean", "running_var"):
                name = f"{layer.name}.1.{p}"
                out[name] = state[name][rows].clone()
    return out


def drop_removed(
    space: ChannelSpace, config: ChannelConfig, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` without the tensors of the bodies of the blocks ``config`` removes (what
    ``build_pruned(space, config)`` does not have)."""
    gone = tuple(f"features.{i}.body." for i in space.removed(config).values())
    return {k: v for k, v in state.items() if not k.startswith(gone)}


@contextlib.contextmanager
def gene_masks(
    model: nn.Module, space: ChannelSpace, masks: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    """Within the block, every producer BN of gene ``g`` (in ``masks``) has its output multiplied
    by ``masks[g]``: shape ``(C,)`` (one factor a channel) or ``(N, C)`` (one a sample and
    channel, for per-sample gradients).  Coupled producers share the one factor."""
    handles = []

    def hook(mask: torch.Tensor):
        def fn(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            m = mask if mask.dim() == 2 else mask.unsqueeze(0)
            return out * m[:, :, None, None]

        return fn

    try:
        for gene, layers in producers(space).items():
            if gene in masks:
                for layer in layers:
                    bn = conv_bn(model, layer)[1]
                    handles.append(bn.register_forward_hook(hook(masks[gene])))
        yield
    finally:
        for h in handles:
            h.remove()
