"""Pruning a trained network: copying kept channels, allocation, and every criterion's property."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from metaprune import build_pruned, count_flops, create_space
from metaprune.export import check_exports, export_model
from metaprune.prune import (
    CriterionError,
    PruneConfig,
    allocate,
    cost_function,
    keep_for,
    keep_top,
    make_criterion,
    producers,
    prune_network,
    prune_state,
)
from metaprune.prune.channels import conv_bn
from metaprune.prune.criteria.lrf import LRF
from metaprune.prune.criteria.sss import apg_step

SPACES = {
    "resnet20": dict(width_mult=0.25),
    "cbm_mobilenet": dict(width_mult=1 / 32),
    "mobilenet_v2": dict(stem="cifar", width_mult=0.25),
}


def space_of(name: str, **kw):
    opts = dict(in_chans=3, input_size=8, num_classes=5, **SPACES[name])
    return create_space(name, **{**opts, **kw})


def trained_like(space, seed: int = 0) -> torch.nn.Module:
    """A full-width network with random weights and BN statistics (BN is no identity)."""
    torch.manual_seed(seed)
    model = build_pruned(space, space.max())
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batches(n: int = 4, size: int = 16, classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(size, 3, 8, 8, generator=g), torch.randint(classes, (size,), generator=g))]
    data += [
        (torch.randn(size, 3, 8, 8, generator=g), torch.randint(classes, (size,), generator=g))
        for _ in range(n - 1)
    ]
    return itertools.cycle(data)


def random_keep(space, config, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    widths = space.widths(config)
    return {
        gene.name: torch.randperm(gene.max_channels, generator=g)[: widths[gene.name]].sort()[0]
        for gene in space.genes
    }


def zeroed(model, space, keep):
    """The full network with every channel outside ``keep`` silenced at all its producers."""
    out = build_pruned(space, space.max())
    out.load_state_dict(model.state_dict())
    for gene, layers in producers(space).items():
        drop = sorted(
            set(range(space.genes[space.gene_index[gene]].max_channels)) - set(keep[gene].tolist())
        )
        for layer in layers:
            bn = conv_bn(out, layer)[1]
            bn.weight.data[drop] = 0.0
            bn.bias.data[drop] = 0.0
    return out.eval()


# -- copying kept channels ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_pruned_network_equals_full_network_with_pruned_channels_zeroed(name):
    space = space_of(name)
    model = trained_like(space)
    x = torch.randn(6, 3, 8, 8)
    for seed, ratio in [(1, 0.5), (2, 0.25)]:
        config = space.uniform(ratio, nearest=True)
        keep = random_keep(space, config, seed)
        pruned = build_pruned(space, config)
        pruned.load_state_dict(prune_state(space, model.state_dict(), keep), strict=True)
        with torch.no_grad():
            want, got = zeroed(model, space, keep)(x), pruned.eval()(x)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (name, ratio)
        # and the property can fail: keeping other channels than the zeroed ones differs
        other = random_keep(space, config, seed + 10)
        with torch.no_grad():
            assert not torch.allclose(zeroed(model, space, other)(x), got, atol=1e-3)


def test_prune_state_refuses_indices_out_of_range():
    space = space_of("resnet20")
    keep = random_keep(space, space.max())
    keep["stage1"] = torch.tensor([0, 99])
    with pytest.raises(ValueError, match="stage1"):
        prune_state(space, trained_like(space).state_dict(), keep)


# -- allocation ---------------------------------------------------------------------------------
def test_keep_top_keeps_highest_scores_in_order():
    keep = keep_top({"g": torch.tensor([0.1, 5.0, 0.3, 4.0, 4.0])}, {"g": 3})
    assert keep["g"].tolist() == [1, 3, 4]


@pytest.mark.parametrize("normalise", [None, "flops", "memory"])
def test_global_allocation_meets_target_and_prunes_the_unimportant_gene(normalise):
    space = space_of("resnet20", width_mult=0.5)
    scores = {g.name: torch.ones(g.max_channels) for g in space.genes}
    dull = "s2.b1.mid"
    scores[dull] = torch.full_like(scores[dull], 1e-6)
    flops = cost_function(space, "flops")
    for ratio in (0.9, 0.5):
        budget = ratio * flops(space.max())
        config = allocate(space, scores, budget, "flops", normalise)
        assert flops(config) <= budget
        assert config.widths()[dull] == space.genes[space.gene_index[dull]].choices[0]
        # greedy stops at the first config under the budget: one step wider is over it
        assert count_flops(space, config) > 0.3 * budget
    with pytest.raises(ValueError, match="below the smallest"):
        allocate(space, scores, 1.0)
    with pytest.raises(ValueError, match="scores of gene"):
        allocate(space, {**scores, dull: torch.ones(3)}, budget)


# -- criteria -----------------------------------------------------------------------------------
CRITERIA = {
    "l1": {},
    "bn_scale": {"sparsity": 1e-3, "steps": 2},
    "fisher": {"batches": 2},
    "distortion": {"batches": 1},
    "lrf": {"batches": 2},
    "sss": {"steps": 2},
    "ga": {"population": 4, "elite": 2, "generations": 1, "batches": 1},
}


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_each_criterion_meets_target_and_is_exact_when_nothing_is_pruned(name):
    space = space_of("cbm_mobilenet")
    x = torch.randn(4, 3, 8, 8)
    cfg = PruneConfig(criterion=name, options=CRITERIA[name], widths=1.0)
    work = trained_like(space)
    config, state, _ = prune_network(work, space, cfg, batches())
    assert config == space.max()
    pruned = build_pruned(space, config)
    pruned.load_state_dict(state, strict=True)
    with torch.no_grad():  # the criterion's network (trained by some criteria), exactly
        assert torch.equal(pruned.eval()(x), work.eval()(x))
    cfg = PruneConfig(criterion=name, options=CRITERIA[name], target=0.5)
    config, state, summary = prune_network(trained_like(space), space, cfg, batches())
    assert summary["flops_ratio"] <= 0.5
    build_pruned(space, config).load_state_dict(state, strict=True)
    for gene, kept in summary["kept"].items():  # every gene keeps its highest-scoring channels
        s = torch.tensor(summary["scores"][gene])
        dropped = sorted(set(range(len(s))) - set(kept))
        assert not dropped or s[kept].min() >= s[dropped].max()


def test_l1_keeps_the_planted_large_filters():
    space = space_of("resnet20")
    model = trained_like(space)
    gene = "s1.b1.mid"
    (layer,) = producers(space)[gene]
    planted = [1, 3]
    with torch.no_grad():
        conv_bn(model, layer)[0].weight[planted] *= 20.0
    scores = make_criterion("l1").score(model, space, batches())
    keep = keep_for(space, scores, space.uniform(0.5, nearest=True))
    assert keep[gene].tolist() == planted


def kill_channel(model, space, gene: str, channel: int) -> None:
    """A dead channel: zero output at every producer."""
    for layer in producers(space)[gene]:
        bn = conv_bn(model, layer)[1]
        bn.weight.data[channel] = 0.0
        bn.bias.data[channel] = 0.0


@pytest.mark.parametrize(
    "name, options",
    [
        ("fisher", {"batches": 2}),
        ("distortion", {}),
        ("distortion", {"mode": "exact", "batches": 1}),
        ("distortion", {"probes": 3}),
    ],
)
def test_data_criteria_rank_a_planted_dead_channel_last(name, options):
    space = space_of("cbm_mobilenet")
    model = trained_like(space)
    for gene, ch in [("stage1", 2), ("s1.b0.mid", 5)]:
        kill_channel(model, space, gene, ch)
    scores = make_criterion(name, options).score(model, space, batches())
    for gene, ch in [("stage1", 2), ("s1.b0.mid", 5)]:
        s = scores[gene]
        assert s[ch] == s.min() and s[ch] < 1e-3 * s.median()


def test_ga_keeps_a_planted_important_channel():
    space = space_of("cbm_mobilenet")
    model = trained_like(space)
    planted = [3, 17]
    with torch.no_grad():  # the classifier reads these channels of `last` 100 times harder
        model.classifier.weight[:, planted] *= 100.0
        x = torch.randn(32, 3, 8, 8)
        own = itertools.cycle([(x, model(x).argmax(1))])  # labels the network gets right
    ga = make_criterion("ga", {"population": 8, "elite": 2, "generations": 4, "batches": 1})
    scores = ga.score(model, space, own)
    keep = keep_top(scores, {"last": 16})  # the searched width: the GA's winner
    assert set(planted) <= set(keep["last"].tolist())
    assert scores["last"][planted].min() >= 1.0


def test_distortion_probes_estimate_the_per_class_sum_without_bias():
    space = space_of("cbm_mobilenet")
    model = trained_like(space)
    exact = make_criterion("distortion", {"batches": 1}).score(model, space, batches())
    probed = make_criterion("distortion", {"batches": 1, "probes": 300}).score(
        model, space, batches()
    )
    for gene in ("stage1", "last"):
        assert torch.allclose(probed[gene].sum(), exact[gene].sum(), rtol=0.15)
        assert torch.corrcoef(torch.stack([probed[gene], exact[gene]]))[0, 1] > 0.9


def test_lrf_compensation_reduces_the_output_error_of_removal():
    space = space_of("resnet20")
    model = trained_like(space)
    gene = "s3.b0.mid"
    conv, bn = conv_bn(model, producers(space)[gene][0])
    with torch.no_grad():  # channels 0..3 copy 4..7: linearly replaceable
        conv.weight[:4] = conv.weight[4:8]
        bn.weight[:4], bn.bias[:4] = bn.weight[4:8], bn.bias[4:8]
        bn.running_mean[:4], bn.running_var[:4] = bn.running_mean[4:8], bn.running_var[4:8]
    data = batches(4, 32)
    lrf = LRF(batches=4)
    scores = lrf.score(model, space, data)
    assert set(scores[gene].argsort()[:4].tolist()) <= set(range(8))
    config = space.config([len(space.ratios) - 1] * len(space))
    widths = space.widths(config)
    widths[gene] = 12  # of 16
    keep = keep_top(scores, widths)
    x = torch.randn(64, 3, 8, 8)
    errors = {}
    for compensate in (True, False):
        lrf.compensate = compensate
        state = lrf.transfer(model, space, keep, data)
        pruned = type(model)(space.arch, widths).eval()
        pruned.load_state_dict(state, strict=True)
        with torch.no_grad():
            errors[compensate] = F.mse_loss(pruned(x), model(x)).item()
    assert errors[True] < 0.5 * errors[False]


def test_apg_drives_useless_factors_to_exactly_zero():
    # G(l) = 0.5 * ||l - a||^2: the factors of a's small entries are useless under gamma = 0.3
    a = torch.tensor([1.0, 0.1, -2.0, 0.0, 0.2])
    lam, v = torch.ones(5), torch.zeros(5)
    for _ in range(200):
        sparse = apg_step(lam, v, lam - a, lr=0.1, gamma=0.3, mu=0.9)
    assert sparse[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(sparse[[0, 2]], torch.tensor([0.7, -1.7]), atol=1e-3)


def test_sss_zeroes_a_planted_dead_channel_and_removing_zero_factors_changes_nothing():
    space = space_of("cbm_mobilenet")
    model = trained_like(space)
    kill_channel(model, space, "s2.b1.mid", 3)
    with torch.no_grad():  # labels the network gets right, confidently: factors matter
        model.classifier.weight *= 30.0
        x = torch.randn(64, 3, 8, 8)
        own = itertools.cycle([(x, model(x).argmax(1))])
    sss = make_criterion(
        "sss", {"steps": 30, "gamma": 0.02, "factor_lr": 1.0, "lr": 1e-4, "momentum": 0.5}
    )
    scores = sss.score(model, space, own)
    assert scores["s2.b1.mid"][3] == 0.0
    assert sum(int((s > 0).sum()) for s in scores.values()) > 0  # not everything is removed
    keep = {g: (s > 0).nonzero().flatten() for g, s in scores.items()}
    keep = {g: k if len(k) else torch.tensor([0]) for g, k in keep.items()}
    widths = {g: len(k) for g, k in keep.items()}
    pruned = type(model)(space.arch, widths).eval()
    pruned.load_state_dict(prune_state(space, model.state_dict(), keep))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pruned(x), model.eval()(x), atol=1e-5)


def test_sss_zeroes_a_dead_residual_block_and_the_pruned_network_runs_and_exports(tmp_path):
    space = space_of("resnet20")
    model = trained_like(space)
    block = 5  # features.5: stage 2's second block; its body's output is dead
    bn = model.get_submodule(f"features.{block}.body.1")[1]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
        x = torch.randn(64, 3, 8, 8)
        own = itertools.cycle([(x, model(x).argmax(1))])
    opts = {"steps": 30, "gamma": 0.02, "factor_lr": 1.0, "lr": 1e-4, "momentum": 0.5}
    sss = make_criterion("sss", opts)
    scores = sss.score(model, space, own)
    assert sss.block_factors[block] == 0.0 and len(sss.block_factors) == 9
    assert sum(f > 0 for f in sss.block_factors.values()) >= 1
    assert scores["s2.b1.mid"].max() == 0.0
    gene = space.gene_index["s2.b1.mid"]
    config = space.config([0 if k == gene else len(space.ratios) - 1 for k in range(len(space))])
    pruned = build_pruned(space, config).eval()
    pruned.load_state_dict(prune_state(space, model.state_dict(), keep_for(space, scores, config)))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the dead block at its smallest width changes nothing
        assert torch.allclose(pruned(x), model.eval()(x), atol=1e-5)
    paths = export_model(pruned, space, config, tmp_path / "e", formats=["torchscript"])
    check_exports(paths, pruned, x)


def test_bad_criterion_names_and_options_are_named_errors():
    with pytest.raises(CriterionError, match="unknown; choose one of"):
        make_criterion("magnitude")
    with pytest.raises(CriterionError, match=r"\['batchez'\] unknown for criterion 'fisher'"):
        make_criterion("fisher", {"batchez": 3})
    with pytest.raises(CriterionError, match="fisher"):
        make_criterion("fisher", {"normalise": "speed"})


def test_a_latency_target_is_met_by_the_predicted_latency(tmp_path):
    from test_latency import fake_table
    from test_latency import tiny_space as latency_space

    from metaprune.cost.latency.predictor import load_latency_model

    space = latency_space("resnet20", choices=(0.25, 0.5, 0.75, 1.0))
    table = str(fake_table(space).save(tmp_path / "t.json"))
    model = trained_like(space)
    cfg = PruneConfig(criterion="l1", target="60%", cost="latency", latency_table=table)
    config, _, _ = prune_network(model, space, cfg, batches())
    predict = load_latency_model(table, space).predict
    assert predict(config) <= 0.6 * predict(space.max()) < predict(space.max())
    with pytest.raises(ValueError, match="latency_table"):
        PruneConfig(target="2ms", cost="latency").validate()
