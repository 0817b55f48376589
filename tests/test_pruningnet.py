"""PruningNet: generate/forward equivalence, gradients, per-choice BN, structure sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metaprune as mp
from metaprune.pruningnet import ConfigSampler, PruningNet, PruningNetConfig, create_pruningnet
from metaprune.pruningnet.blocks import CroppedGenerate

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def batch(space, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *space.input_shape)


def randomise_state(pnet: PruningNet, seed: int = 0) -> None:
    """Non-trivial BN statistics and classifier, so equal outputs are a real check."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in pnet.bn.values():
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
            if bn.affine:
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
        pnet.classifier.weight.copy_(torch.randn(pnet.classifier.weight.shape, generator=g))


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("family", mp.list_models())
def test_generate_matches_forward_every_family(family: str, stem: str, tiny_space) -> None:
    space = tiny_space(family, stem)
    pnet = create_pruningnet(space).eval()
    randomise_state(pnet)
    x = batch(space)
    for cfg in (space.max(), space.min(), space.sample(1)):
        model = mp.build_pruned(space, cfg).eval()
        sd = pnet.generate(cfg)
        assert list(sd) == list(model.state_dict())
        model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            expected, got = model(x), pnet(x, cfg)
        assert expected.abs().mean() > 1e-3  # not a vacuous comparison of zeros
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoding,affine", [("global", True), ("layer", True), ("global", False)])
def test_options_keep_equivalence(encoding: str, affine: bool, tiny_space) -> None:
    space = tiny_space("resnet20")
    pnet = create_pruningnet(space, hidden=8, encoding=encoding, bn_affine=affine).eval()
    randomise_state(pnet, seed=3)
    cfg = space.sample(5)
    model = mp.build_pruned(space, cfg).eval()
    model.load_state_dict(pnet.generate(cfg), strict=True)
    x = batch(space)
    with torch.no_grad():
        torch.testing.assert_close(pnet(x, cfg), model(x), rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_meta_block(tiny_space) -> None:
    space = tiny_space("mobilenet_v2")
    pnet = create_pruningnet(space, bn_affine=True).train()
    x, y = batch(space, 4), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(pnet(x, space.max()), y).backward()
    for name, p in pnet.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_per_choice_bn_updates_only_the_chosen_rows(tiny_space) -> None:
    space = tiny_space("resnet20")
    pnet = create_pruningnet(space).train()
    cfg = space.sample(7)
    widths = space.widths(cfg)
    before = {
        k: v.clone() for k, v in pnet.state_dict().items() if "running" in k or "tracked" in k
    }
    pnet(batch(space, 4), cfg)
    after = pnet.state_dict()
    checked = 0
    for ly in space.arch.layers[:-1]:
        key = f"bn.{ly.name.replace('.', '_')}"
        gene = space.genes[space.gene_index[ly.cout]]
        width = widths[ly.cout]
        row = gene.unique_widths.index(width)
        for buf in ("running_mean", "running_var"):
            old, new = before[f"{key}.{buf}"], after[f"{key}.{buf}"]
            changed = (old != new).any(dim=1)
            assert changed.tolist() == [i == row for i in range(len(changed))], (key, buf)
            assert torch.equal(old[row, width:], new[row, width:])
        tracked = after[f"{key}.num_batches_tracked"] - before[f"{key}.num_batches_tracked"]
        assert tracked.tolist() == [int(i == row) for i in range(len(tracked))]
        checked += 1
    assert checked == len(space.arch.layers) - 1


def test_equal_widths_are_the_same_network(tiny_space) -> None:
    space = tiny_space("resnet20")
    gene = space.genes[0]
    pairs = [(i, j) for i in range(len(space.ratios)) for j in range(i + 1, len(space.ratios))]
    i, j = next((i, j) for i, j in pairs if gene.choices[i] == gene.choices[j])
    a = space.config([i] + [5] * (len(space) - 1))
    b = space.config([j] + [5] * (len(space) - 1))
    assert a != b
    pnet = create_pruningnet(space)
    sa, sb = pnet.generate(a), pnet.generate(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_generated_weights_start_at_kaiming_scale(tiny_space) -> None:
    space = tiny_space("resnet20", width_mult=1.0)
    sd = create_pruningnet(space).generate(space.max())
    for ly in space.arch.layers[:-1]:
        w = sd[f"{ly.name}.0.weight"]
        expected = (2.0 / w[0].numel()) ** 0.5
        assert 0.5 < w.std().item() / expected < 2.0, ly.name


def test_rejects_config_of_another_space_and_bad_options(tiny_space) -> None:
    space, other = tiny_space("resnet20"), tiny_space("resnet56")
    pnet = create_pruningnet(space)
    with pytest.raises(ValueError, match="belongs to space"):
        pnet(batch(space, 1), other.max())
    with pytest.raises(ValueError, match="belongs to space"):
        pnet.generate(other.max())
    with pytest.raises(ValueError, match="encoding"):
        create_pruningnet(space, encoding="nope")
    with pytest.raises(ValueError, match="hidden"):
        PruningNetConfig(hidden=0)


def test_sandwich_sampler_contains_max_and_min(tiny_space) -> None:
    space = tiny_space("mobilenet_v2")
    configs = ConfigSampler(space, sandwich=True).sample(0)
    assert space.max() in configs and space.min() in configs and len(configs) == 3
    assert len(ConfigSampler(space).sample(0)) == 1
    with pytest.raises(ValueError, match="sampler mode"):
        ConfigSampler(space, mode="nope")


def _ks_uniform(values: np.ndarray, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance between the sample and Uniform[lo, hi]."""
    u = np.sort((values - lo) / (hi - lo))
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


def test_flops_uniform_sampler_spreads_flops(tiny_space) -> None:
    space = tiny_space("mobilenet_v2", width_mult=0.5)
    cost = mp.cost.cost_model(space)
    lo, hi = cost.flops(space.min()), cost.flops(space.max())
    rng = np.random.default_rng(0)
    stats = {}
    for mode in ("uniform", "flops_uniform"):
        sampler = ConfigSampler(space, mode=mode)
        configs = [sampler.sample(rng)[0] for _ in range(300)]
        stats[mode] = _ks_uniform(cost.flops_many(configs).astype(float), lo, hi)
    assert stats["flops_uniform"] < 0.1 < stats["uniform"], stats


@pytest.mark.parametrize("crop", [(3, 2), (4, 3), (1, 1)])
def test_cropped_generate_gradients(crop: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CroppedGenerate.apply, (weight, bias, h, *crop))


@pytest.mark.parametrize("training", [False, True])
def test_threads_running_different_configs_match_sequential(training: bool, tiny_space) -> None:
    """Two threads call one PruningNet with different configs at the same time (released by a
    barrier every iteration): each gets exactly its sequential result, so no call leaks a
    config into shared modules (depthwise groups, channel counts, the BN mode)."""
    import threading

    space = tiny_space("mobilenet_v2")
    pnet = create_pruningnet(space).train(training)
    randomise_state(pnet)
    configs = [space.max(), space.min()]
    x = batch(space, 4)
    with torch.no_grad():
        expected = [pnet(x, c) for c in configs]
    rounds, barrier = 40, threading.Barrier(len(configs))
    results: list[list[torch.Tensor]] = [[] for _ in configs]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                with torch.no_grad():
                    results[k].append(pnet(x, configs[k]))
        except BaseException as e:  # a thread's error must fail the test, not vanish
            barrier.abort()
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, outs in enumerate(results):
        assert len(outs) == rounds
        for out in outs:
            assert torch.equal(out, expected[k]), (k, training)


def test_save_and_load_round_trip(tiny_space, tmp_path) -> None:
    """save_pruningnet writes what load_pruningnet rebuilds: the same outputs for any config,
    the split it was trained on and the identity; a file refuses another space."""
    from metaprune.io import CheckpointError, safe_torch_load
    from metaprune.pruningnet import load_pruningnet, save_pruningnet

    space = tiny_space("mobilenet_v2")
    pnet = create_pruningnet(space, hidden=8, bn_affine=True).eval()
    randomise_state(pnet)
    pnet.train_split = {"dataset": {"name": "fake"}, "split": "train", "size": 3}
    path = save_pruningnet(tmp_path, pnet, identity={"train": {"epochs": 1}})
    assert path == tmp_path / "pruningnet.pt"
    assert safe_torch_load(path)["identity"] == {"train": {"epochs": 1}}
    back = load_pruningnet(tmp_path).eval()
    assert back.config == pnet.config and back.train_split == pnet.train_split
    x, cfg = batch(space), space.sample(3)
    with torch.no_grad():
        assert torch.equal(back(x, cfg), pnet(x, cfg))
    with pytest.raises(CheckpointError, match=tiny_space("resnet20").fingerprint):
        load_pruningnet(path, space=tiny_space("resnet20"))
