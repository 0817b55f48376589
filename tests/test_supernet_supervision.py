"""Full-net supervision of PruningNet training (``train.distill=fullnet``): in-place distillation
and stage-wise supervision, their identities and their resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import ddp_env, kill_in_epoch_2, spawn_ranks
from omegaconf import OmegaConf

from metaprune import create_space
from metaprune.engine import TrainConfig
from metaprune.groups import ConfigError
from metaprune.io import CheckpointError, safe_torch_load
from metaprune.pruningnet import ConfigSampler, create_pruningnet, load_pruningnet
from metaprune.pruningnet.supervision import fullnet_step
from metaprune.pruningnet.supervision.stagewise import StagewiseSupervision, stages
from metaprune.retrain.distill import kd_loss
from metaprune.schema import load_config
from metaprune.train import train

LOGITS = {"distill": "fullnet", "distill_mode": "logits", "distill_temperature": 2.0}
STAGEWISE = {"distill": "fullnet", "distill_mode": "stagewise"}


def run_cfg(model="cbm_mobilenet", pruningnet="layer", **train_opts):
    """A two-step run on 8x8 fake data."""
    return OmegaConf.create(
        {
            "model": {"name": model, "stem": "cifar", "width_mult": 0.0625},
            "space": {"choices": [0.25, 0.5, 1.0]},
            "data": {
                "name": "fake",
                "image_size": 8,
                "fake_size": 48,
                "fake_test_size": 8,
                "fake_classes": 4,
                "fake_channels": 1,
                "search_size": 16,
            },
            "pruningnet": {"hidden": 16, "encoding": pruningnet},
            "optim": {"lr": 0.05},
            "sched": {"name": "cosine", "warmup_epochs": 0.5},
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "eval_batch_size": 8,
                "max_steps_per_epoch": 2,
                "recalib_batches": 1,
                "val_batches": 1,
                "device": "cpu",
                "log_every": 1,
                **train_opts,
            },
        }
    )


def tiny(family="cbm_mobilenet"):
    return create_space(
        family, stem="cifar", width_mult=0.0625, input_size=8, in_chans=1, num_classes=4,
        choices=[0.25, 0.5, 1.0],
    )  # fmt: skip


@pytest.mark.parametrize("model", ["cbm_mobilenet", "resnet20"])
@pytest.mark.parametrize("opts", [LOGITS, STAGEWISE], ids=["logits", "stagewise"])
def test_each_supervision_trains_two_steps(opts, model, tmp_path):
    out = train(run_cfg(model, **opts), tmp_path)
    assert out["steps"] == 2 and math.isfinite(out["history"][0]["train_loss"])
    pnet = load_pruningnet(tmp_path)
    torch.manual_seed(0)  # the stage seeds with train.seed before building the PruningNet
    fresh = create_pruningnet(pnet.space, hidden=16).state_dict()
    moved = [k for k, v in pnet.named_parameters() if not torch.equal(v, fresh[k])]
    assert len(moved) == len(list(pnet.parameters()))
    # the options are in the run's identity (and so in pruningnet.pt)
    ident = safe_torch_load(tmp_path / "pruningnet.pt")["identity"]["train"]
    assert {k: ident[k] for k in opts} == opts


def test_options_in_an_identity_only_when_on():
    """Runs made before the options existed keep their identity; a retrain never has them."""
    default = TrainConfig().identity()
    assert not any(k.startswith("distill") for k in default)
    on = TrainConfig(distill="fullnet", distill_mode="stagewise").identity()
    assert on["distill_mode"] == "stagewise" and on["distill_weight"] == 0.5
    assert {k: v for k, v in on.items() if not k.startswith("distill")} == default
    assert TrainConfig(distill="fullnet").identity(pruningnet=False) == TrainConfig().identity(
        pruningnet=False
    )
    composed = load_config([]).train
    assert composed.distill == "none" and composed.distill_mode == "logits"


def test_quality_benchmark_recipes_tell_the_options_apart():
    """``bench_quality --set ...`` runs of each option are distinct recipes; the default's is
    unchanged (no ``distill`` keys, the ``pruningnet`` group as before)."""
    from metaprune.benchmarks.quality import recipe

    paper = recipe(load_config(["model=cbm_mobilenet"]))
    assert not any(k.startswith("distill") for k in paper["train"])
    assert paper["pruningnet"] == {"hidden": 32, "encoding": "layer", "bn_affine": False}
    variants = [
        ["train.distill=fullnet", "train.distill_mode=logits"],
        ["train.distill=fullnet", "train.distill_mode=stagewise"],
        ["pruningnet=graph"],
    ]
    recipes = [paper] + [recipe(load_config(["model=cbm_mobilenet", *v])) for v in variants]
    assert len({json.dumps(r, sort_keys=True) for r in recipes}) == len(recipes)


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match=r"train\.distill_mode 'nope'"):
        load_config(["train.distill=fullnet", "train.distill_mode=nope"])
    with pytest.raises(ValueError, match=r"train\.distill must be one of"):
        TrainConfig(distill="yes").validate()
    with pytest.raises(ValueError, match=r"train\.distill_weight"):
        TrainConfig(distill_weight=1.5).validate()
    with pytest.raises(ValueError, match=r"train\.distill_temperature"):
        TrainConfig(distill_temperature=0.0).validate()


def test_logits_step_is_the_mean_of_full_ce_and_distilled_losses():
    space = tiny()
    torch.manual_seed(0)
    pnet = create_pruningnet(space, hidden=8)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn = torch.nn.CrossEntropyLoss()
    sampler = ConfigSampler(space, sandwich=True)  # max, sampled, min: the max is dropped
    tcfg = TrainConfig(**LOGITS, distill_weight=0.3)
    loss = fullnet_step(sampler, tcfg)(pnet, x, y, np.random.default_rng(3), loss_fn)
    _, sampled, smallest = sampler.sample(np.random.default_rng(3))
    full = pnet(x, space.max())
    kd = [kd_loss(pnet(x, c), full.detach(), y, loss_fn, 2.0, 0.3) for c in (sampled, smallest)]
    expected = (loss_fn(full, y) + sum(kd)) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the soft targets are detached: the gradients are those of the expression above, not of
    # one that also pulls the full network towards the sampled ones
    params = list(pnet.parameters())
    got = torch.autograd.grad(loss, params)
    for a, b in zip(got, torch.autograd.grad(expected, params, retain_graph=True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    undetached = (loss_fn(full, y) + sum(kd_loss(pnet(x, c), full, y, loss_fn, 2.0, 0.3)
                                          for c in (sampled, smallest))) / 3  # fmt: skip
    assert any(
        not torch.allclose(a, b, rtol=1e-4, atol=1e-7)
        for a, b in zip(got, torch.autograd.grad(undetached, params), strict=True)
    )


@pytest.mark.parametrize("family", ["cbm_mobilenet", "resnet20", "mobilenet_v2"])
def test_stagewise_loss_is_zero_for_the_full_network_only(family):
    space = tiny(family)
    torch.manual_seed(0)
    pnet = create_pruningnet(space, hidden=8).train()
    sup = StagewiseSupervision(space, TrainConfig(**STAGEWISE))
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        features = sup.features(pnet, x)
        assert all(v.item() == 0.0 for v in sup.stage_losses(pnet, x, features, space.max()))
        assert sum(sup.stage_losses(pnet, x, features, space.min())).item() > 1e-3
        # the stages chained end to end are the full network
        logits = pnet(features[-1], space.max(), sup.head)
        torch.testing.assert_close(logits, pnet(x, space.max()))


def test_each_stage_is_fed_the_full_networks_features():
    """A config pruned inside one stage differs from the full network on that stage alone (its
    other stages' losses are exactly zero): each stage gets the full network's previous stage
    output, not the sub-network's."""
    space = tiny()  # stages: blocks 0-2 (genes stage1, s1.b0.mid, s1.b1.mid), 3-4, 5
    torch.manual_seed(0)
    pnet = create_pruningnet(space, hidden=8).train()
    sup = StagewiseSupervision(space, TrainConfig(**STAGEWISE))
    x = torch.randn(6, 1, 8, 8)
    genes = [g.name for g in space.genes]
    with torch.no_grad():
        features = sup.features(pnet, x)
        for gene, stage in (("s1.b0.mid", 0), ("s2.b1.mid", 1)):
            idx = [0 if g == gene else 2 for g in genes]  # that gene at 0.25, the rest at max
            losses = sup.stage_losses(pnet, x, features, space.config(idx))
            assert [v.item() == 0.0 for v in losses] == [s != stage for s in range(3)]
            assert losses[stage].item() > 1e-4


def test_stagewise_step_trains_each_stage_on_detached_features():
    """The step's value and gradients: the full network on the labels through its stages;
    each sampled one's stages on the full network's detached, cropped features, its head on
    the labels from the full network's last features."""
    space = tiny()
    torch.manual_seed(0)
    pnet = create_pruningnet(space, hidden=8).train()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn = torch.nn.CrossEntropyLoss()
    sampler = ConfigSampler(space)
    tcfg = TrainConfig(**STAGEWISE, distill_weight=0.3)
    loss = fullnet_step(sampler, tcfg)(pnet, x, y, np.random.default_rng(5), loss_fn)
    (config,) = sampler.sample(np.random.default_rng(5))
    assert config != space.max()
    parts, head = [range(0, 3), range(3, 5), range(5, 6)], range(6, 7)
    out_genes = ["stage1", "stage2", "last"]  # each stage's output width
    w = {g: config.widths()[g] for g in out_genes}
    full, h = [], x
    for part in parts:
        h = pnet(h, space.max(), part)
        full.append(h)
    feats = [f.detach() for f in full]
    mse = [
        torch.nn.functional.mse_loss(
            pnet(x if s == 0 else feats[s - 1][:, : w[out_genes[s - 1]]], config, part),
            feats[s][:, : w[out_genes[s]]],
        )
        for s, part in enumerate(parts)
    ]
    sub_head = loss_fn(pnet(feats[-1][:, : w["last"]], config, head), y)
    expected = (loss_fn(pnet(full[-1], space.max(), head), y)
                + 0.7 * sub_head + 0.3 * sum(mse) / 3) / 2  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    params = list(pnet.parameters())
    for a, b in zip(
        torch.autograd.grad(loss, params), torch.autograd.grad(expected, params), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_stages_are_the_tied_resolution_stages():
    assert stages(tiny("cbm_mobilenet").arch) == [range(0, 3), range(3, 5), range(5, 6)]
    assert stages(tiny("resnet20").arch) == [range(0, 4), range(4, 7), range(7, 10)]
    space = tiny()
    pnet = create_pruningnet(space, hidden=4)
    for bad in (range(3, 8), range(2, 2), range(0, 6, 2)):  # 6 blocks and the head: units 0-6
        with pytest.raises(ValueError, match=r"part must be .* range\(0, 7\)"):
            pnet(torch.randn(2, 1, 8, 8), space.max(), bad)


@pytest.mark.parametrize(
    "pruningnet,opts", [("graph", LOGITS), ("layer", STAGEWISE)], ids=["graph-logits", "stagewise"]
)
def test_kill_and_resume_equals_uninterrupted(pruningnet, opts, tmp_path, monkeypatch):
    opts = {**opts, "epochs": 2, "max_steps_per_epoch": 1}
    train(run_cfg(pruningnet=pruningnet, **opts), tmp_path / "full")
    kill_in_epoch_2(run_cfg(pruningnet=pruningnet, **opts), tmp_path / "run", monkeypatch)
    with pytest.raises(CheckpointError, match="resume"):
        train(run_cfg(pruningnet=pruningnet, **opts), tmp_path / "run")
    out = train(run_cfg(pruningnet=pruningnet, **opts, resume=True), tmp_path / "run")

    full = safe_torch_load(tmp_path / "full" / "pruningnet.pt")["state_dict"]
    resumed = safe_torch_load(tmp_path / "run" / "pruningnet.pt")["state_dict"]
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert out["val"] == json.loads((tmp_path / "full" / "metrics.json").read_text())["val"]


def _ddp_train(rank, world, port, out_dir):
    ddp_env(rank, world, port)
    train(run_cfg(pruningnet="graph", **STAGEWISE), out_dir)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_stagewise_graph_training_under_ddp(tmp_path):
    """Stage-wise supervision runs the PruningNet part by part through the DDP wrapper."""
    spawn_ranks(_ddp_train, 2, str(tmp_path))
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 1  # 32 images, 2x16
    load_pruningnet(tmp_path)
