"""The graph encoding: a graph convolution network over the network's topology (Graph PruningNet).

Graph PruningNet (this project's ``papers/002``, the first abstract) views a network as a
topology graph whose nodes are its prunable layers, extracts each node's neighbourhood with a
graph convolution network (GCN), and connects it to the pruned network "by an individual fully
connection layer for each node", the whole trained jointly from scratch.  Here:

* nodes: the prunable convs in the architecture's layer order (the shortcut convs included, the
  classifier not: it is cropped, not generated); :func:`topology` walks the architecture's
  blocks for the directed data-flow edges, a residual block's output being the sum of its last
  conv and its shortcut (a shortcut conv, or the producers of the block's input for an
  identity), so a skip connection is an edge from every layer whose output reaches the next
  layer through it;
* node features: the layer's (input, output) width ratios under the config and its geometry
  (kernel / the largest kernel, 1 / stride, output side / image side, depthwise flag);
* :data:`GRAPH_LAYERS` graph convolutions ``H' = A_hat (H W + b)`` (Kipf & Welling, ICLR 2017:
  ``A_hat = D^-1/2 (A + I) D^-1/2`` over the edges made undirected), ReLU between them, of the
  meta blocks' hidden width (``pruningnet.hidden``); each node's output row feeds that conv's
  meta block, whose first FC is the per-node layer.

Departures (the paper's code is not public): the GCN's depth and width are fixed (two layers,
the meta blocks' hidden width) rather than options, so the ``pruningnet`` group and the
identities of earlier runs keep their keys; the edges are made undirected as in the plain GCN;
the bias is added before the propagation (Kipf & Welling add it after), so a node's bias is
scaled by its row sum of ``A_hat``; the node embeddings the paper hands to its RL search come
from :meth:`~metaprune.pruningnet.PruningNet.node_embeddings`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.arch import Arch, Layer
from metaprune.pruningnet.encoders import Encoder, register_encoder
from metaprune.space import ChannelSpace

GRAPH_LAYERS = 2
"""Graph convolutions of the encoder."""


def topology(arch: Arch) -> list[tuple[int, int]]:
    """Directed data-flow edges ``(source, target)`` between the convs of ``arch``, numbered in
    the order of ``arch.layers``; the image feeds the first conv and has no node."""
    names = [ly.name for ly in arch.layers if ly.kind == "conv"]
    node = {name: k for k, name in enumerate(names)}
    edges: list[tuple[int, int]] = []
    frontier: list[int] = []  # the convs whose outputs sum to the current tensor
    for i, block in enumerate(arch.blocks):
        prev = frontier
        for j in range(len(block.body)):
            k = node[f"features.{i}.body.{j}"]
            edges += [(p, k) for p in prev]
            prev = [k]
        if block.residual and block.shortcut is not None:
            k = node[f"features.{i}.shortcut"]
            edges += [(p, k) for p in frontier]
            prev = [*prev, k]
        elif block.residual:  # identity: the producers of the block's input reach further
            prev = [*prev, *frontier]
        frontier = prev
    return edges


def normalised_adjacency(n: int, edges: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` of the undirected graph of ``edges`` on ``n`` nodes."""
    a = torch.eye(n)
    for s, t in edges:
        a[s, t] = a[t, s] = 1.0
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


@register_encoder("graph")
class GraphEncoder(Encoder):
    """``(n_convs, hidden)``: each conv's GCN embedding of the config; ``edges`` default to
    :func:`topology` of the space's architecture."""

    def __init__(
        self,
        space: ChannelSpace,
        convs: Sequence[Layer],
        hidden: int,
        edges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(space, convs)
        self.dim = hidden
        self.edges = list(topology(space.arch) if edges is None else edges)
        bad = [e for e in self.edges if not all(0 <= k < len(convs) for k in e)]
        if bad:
            raise ValueError(f"graph edges must join nodes 0..{len(convs) - 1}, got {bad}")
        kmax = max(ly.kernel for ly in convs)
        side = space.arch.input_size
        geometry = [
            [ly.kernel / kmax, 1.0 / ly.stride, ly.out_hw[0] / side, float(ly.depthwise)]
            for ly in convs
        ]
        self.register_buffer("geometry", torch.tensor(geometry), persistent=False)
        adj = normalised_adjacency(len(convs), self.edges)
        self.register_buffer("adjacency", adj, persistent=False)
        dims = [2 + len(geometry[0])] + [hidden] * GRAPH_LAYERS
        self.gcn = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, widths: Mapping[str, int]) -> torch.Tensor:
        h = torch.cat([self.layer_ratios(widths), self.geometry], 1)  # (n, 6)
        for k, layer in enumerate(self.gcn):
            h = self.adjacency @ layer(h)  # (n, hidden)
            if k < len(self.gcn) - 1:
                h = F.relu(h)
        return h
