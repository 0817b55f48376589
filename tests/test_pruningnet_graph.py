"""The graph-encoded PruningNet (``pruningnet.encoding=graph``): topology, GCN embeddings that
follow the config and the shortcuts, generate/forward equivalence, training, save and load; the
ratio encodings unchanged by the encoder registry."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

import metaprune as mp
from metaprune.pruningnet import create_pruningnet, load_pruningnet, save_pruningnet
from metaprune.pruningnet.encoders.graph import GraphEncoder, topology
from metaprune.schema import load_config


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomise_state(pnet) -> None:
    """Non-trivial BN statistics and classifier, so equal outputs are a real check."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in pnet.bn.values():
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
        pnet.classifier.weight.copy_(torch.randn(pnet.classifier.weight.shape, generator=g))


@pytest.mark.parametrize("family", mp.list_models())
def test_generate_matches_forward(family, tiny_space) -> None:
    space = tiny_space(family)
    pnet = create_pruningnet(space, hidden=8, encoding="graph").eval()
    randomise_state(pnet)
    x = torch.randn(2, *space.input_shape)
    for cfg in (space.max(), space.min(), space.sample(1)):
        model = mp.build_pruned(space, cfg).eval()
        model.load_state_dict(pnet.generate(cfg), strict=True)
        with torch.no_grad():
            expected, got = model(x), pnet(x, cfg)
        assert expected.abs().max() > 1e-3  # not a vacuous comparison of zeros
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_topology_follows_the_data_flow(tiny_space) -> None:
    """CBM MobileNet: stem 0; blocks 1-2 (convs 1-3, 4-6) with identities; block 3 (7-9)
    without; block 4 (10-12) with one; the head conv 13."""
    edges = set(topology(tiny_space("cbm_mobilenet").arch))
    chain = {(k, k + 1) for k in range(13)}
    skips = {(0, 4), (0, 7), (3, 7), (9, 13)}  # the outputs an identity carries further
    assert edges == chain | skips
    # ResNet-20: a downsampling block's 1x1 shortcut conv reads the block's input
    space = tiny_space("resnet20")
    names = [ly.name for ly in space.arch.layers if ly.kind == "conv"]
    sc = names.index("features.4.shortcut")
    into = {s for s, t in topology(space.arch) if t == sc}
    assert {names[s] for s in into} == {f"features.{i}.body.1" for i in (1, 2, 3)} | {
        "features.0.body.0"
    }


def test_embeddings_follow_the_config_and_the_shortcuts(tiny_space) -> None:
    space = tiny_space("cbm_mobilenet")
    pnet = create_pruningnet(space, hidden=8, encoding="graph")
    emb = pnet.node_embeddings(space.max())
    assert emb.shape == (len(pnet.nodes), 8) and not emb.requires_grad
    assert pnet.nodes == [ly.name for ly in space.arch.layers if ly.kind == "conv"]
    assert not torch.allclose(emb, pnet.node_embeddings(space.min()))
    # one shortcut edge removed, same weights: other embeddings
    convs = [ly for ly in space.arch.layers if ly.kind == "conv"]
    edges = topology(space.arch)
    cut = GraphEncoder(space, convs, 8, edges=[e for e in edges if e != (3, 7)])
    cut.load_state_dict(pnet.encoder.state_dict())
    widths = space.widths(space.max())
    with torch.no_grad():
        torch.testing.assert_close(pnet.encoder(widths), emb)
        diff = (cut(widths) - emb).abs().sum(1)
    assert diff[7] > 1e-4 and diff[3] > 1e-4  # the two ends of the edge
    with pytest.raises(ValueError, match=r"graph edges must join nodes 0\.\.13, got \[\(3, 14\)\]"):
        GraphEncoder(space, convs, 8, edges=[*edges, (3, 14)])
    genes = pnet.gene_embeddings(space.sample(2))
    assert genes.shape == (len(space.genes), 8)
    last = [k for k, ly in enumerate(convs) if ly.cout == "last"]
    torch.testing.assert_close(genes[-1], pnet.node_embeddings(space.sample(2))[last].mean(0))


def test_encoder_trains_jointly(tiny_space) -> None:
    space = tiny_space("resnet20")
    pnet = create_pruningnet(space, hidden=8, encoding="graph")
    before = copy.deepcopy(pnet.encoder.state_dict())
    x, y = torch.randn(8, *space.input_shape), torch.randint(0, 7, (8,))
    out = mp.pruningnet.train_pruningnet(pnet, [(x, y)] * 2, device="cpu", progress=False)
    assert out["steps"] == 2
    assert all(not torch.equal(v, pnet.encoder.state_dict()[k]) for k, v in before.items())


def test_save_and_load_round_trip(tiny_space, tmp_path) -> None:
    space = tiny_space("resnet20")
    pnet = create_pruningnet(space, hidden=8, encoding="graph").eval()
    randomise_state(pnet)
    assert any(k.startswith("encoder.gcn.") for k in pnet.state_dict())
    back = load_pruningnet(save_pruningnet(tmp_path, pnet)).eval()
    assert back.config.encoding == "graph"
    x, cfg = torch.randn(2, *space.input_shape), space.sample(4)
    with torch.no_grad():
        assert torch.equal(back(x, cfg), pnet(x, cfg))
    # the ratio encodings hold no state: files written before encoders existed load unchanged
    for encoding in ("layer", "global"):
        keys = create_pruningnet(space, hidden=8, encoding=encoding).state_dict()
        assert not any(k.startswith("encoder") for k in keys)


@pytest.mark.parametrize(
    "encoding,keys,projections",
    [
        ("layer", "4fcd653f0b6754cd", (-482.3365205, 85.08807574, 101.4934111)),
        ("global", "0df58ca3d397ac1b", (23.93444924, 166.8475274, -26.22451616)),
    ],
)
def test_ratio_encodings_initialise_as_before_encoders_existed(encoding, keys, projections) -> None:
    """A fresh PruningNet of the ratio encodings (seed 0) is the one the code before the encoder
    registry built: the same state-dict keys and shapes, and the same values (three random
    projections of them, taken with that code).  The values are compared to a tolerance, not
    bit for bit: the meta blocks' initial scale comes from a matrix product, whose last bits
    differ between CPUs (AVX-512 and AVX2 kernels sum in other orders)."""
    space = mp.create_space(
        "mobilenet_v2", stem="cifar", width_mult=0.125, input_size=8, in_chans=1, num_classes=4,
        choices=[0.25, 0.5, 1.0],
    )  # fmt: skip
    torch.manual_seed(0)
    state = create_pruningnet(space, hidden=8, encoding=encoding).state_dict()
    names = "|".join(f"{k}{tuple(v.shape)}" for k, v in state.items())
    assert hashlib.sha256(names.encode()).hexdigest()[:16] == keys
    flat = torch.cat([v.double().flatten() for v in state.values()])
    g = torch.Generator().manual_seed(0)
    got = torch.randn(3, flat.numel(), generator=g, dtype=torch.float64) @ flat
    assert got.tolist() == pytest.approx(projections, rel=1e-6, abs=1e-3)


def test_config_group() -> None:
    assert load_config(["pruningnet=graph"]).pruningnet.encoding == "graph"
