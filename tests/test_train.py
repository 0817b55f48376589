"""PruningNet training (``metaprune.train``) on tiny fake data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ddp_env, kill_in_epoch_2
from omegaconf import OmegaConf

from metaprune import build_pruned, create_space
from metaprune.data import build_datasets, make_loader, split_train_search
from metaprune.data.fake import make_fake
from metaprune.data.identity import split_identity
from metaprune.data.recalib import recalibration_batches
from metaprune.engine import OptimConfig, SchedConfig, param_groups
from metaprune.engine.identity import StaleStageError
from metaprune.io import CheckpointError, safe_torch_load
from metaprune.pruningnet import ConfigSampler, create_pruningnet, load_pruningnet
from metaprune.pruningnet.training import (
    pruningnet_step,
    reference_configs,
    score_config,
    train_pruningnet,
)
from metaprune.train import train


def run_cfg(model="mobilenet_v2", epochs=1, **train_opts):
    return OmegaConf.create(
        {
            "model": {"name": model, "stem": "cifar", "width_mult": 0.125},
            "space": {"choices": [0.25, 0.5, 0.75, 1.0]},
            "data": {
                "name": "fake",
                "image_size": 8,
                "fake_size": 80,
                "fake_test_size": 8,
                "fake_classes": 4,
                "fake_channels": 1,
                "search_size": 16,
            },
            "pruningnet": {"hidden": 8},
            "optim": {"lr": 0.05},
            "sched": {"name": "cosine", "warmup_epochs": 0.5},
            "train": {
                "epochs": epochs,
                "batch_size": 16,
                "eval_batch_size": 8,
                "max_steps_per_epoch": 2,
                "recalib_batches": 1,
                "val_batches": 1,
                "device": "cpu",
                "log_every": 1,
                "sandwich": True,
                **train_opts,
            },
        }
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(metrics, run directory) of one finished two-step run (tests must not modify it)."""
    out_dir = tmp_path_factory.mktemp("run")
    return train(run_cfg(), out_dir), out_dir


def test_two_step_training_run(finished_run):
    out, tmp_path = finished_run
    assert out["steps"] == 2 and out["epochs"] == 1
    assert set(out["val"]) == {"acc_max", "acc_min", "acc_uniform0.5"}
    assert json.loads((tmp_path / "metrics.json").read_text())["val"] == out["val"]
    assert any((tmp_path / "tb").iterdir())

    saved = safe_torch_load(tmp_path / "pruningnet.pt")
    assert saved["space"]["family"] == "mobilenet_v2" and saved["pruningnet"]["hidden"] == 8
    ckpt = safe_torch_load(tmp_path / "checkpoint.pt")
    for k, v in saved["state_dict"].items():
        assert torch.equal(v, ckpt["model"][k])

    pnet = load_pruningnet(tmp_path)  # the run directory
    fresh = create_pruningnet(pnet.space, hidden=8)
    assert pnet.space.fingerprint == saved["space"]["fingerprint"]
    assert any(
        not torch.equal(a, b) for a, b in zip(pnet.parameters(), fresh.parameters(), strict=True)
    )
    cfg = pnet.space.uniform(0.5)
    build_pruned(pnet.space, cfg).load_state_dict(pnet.generate(cfg), strict=True)
    # the logged accuracies are those of the saved PruningNet, recalibrated and scored again
    data = build_datasets(run_cfg().data)
    recalib = recalibration_batches(data.train, 1, 16, seed=1)
    val = [next(iter(make_loader(data.search, 8, train=False)))]
    for name, config in reference_configs(pnet.space).items():
        assert score_config(pnet, config, recalib, val) == out["val"][f"acc_{name}"], name
    assert pnet.train_split == split_identity(run_cfg().data, "train", len(data.train))
    assert saved["identity"] == out["identity"] == ckpt["identity"]
    from_ckpt = load_pruningnet(tmp_path / "checkpoint.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(pnet.parameters(), from_ckpt.parameters(), strict=True)
    )

    mtime = (tmp_path / "pruningnet.pt").stat().st_mtime_ns
    assert train(run_cfg(), tmp_path) == json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "pruningnet.pt").stat().st_mtime_ns == mtime  # skipped, not retrained


def test_kill_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    opts = {"epochs": 2, "max_steps_per_epoch": 1, "sandwich": False}
    train(run_cfg(**opts), tmp_path / "full")
    kill_in_epoch_2(run_cfg(**opts), tmp_path / "run", monkeypatch)
    with pytest.raises(CheckpointError, match="resume"):
        train(run_cfg(**opts), tmp_path / "run")
    out = train(run_cfg(**opts, resume=True), tmp_path / "run")

    full = safe_torch_load(tmp_path / "full" / "pruningnet.pt")["state_dict"]
    resumed = safe_torch_load(tmp_path / "run" / "pruningnet.pt")["state_dict"]
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert out["val"] == json.loads((tmp_path / "full" / "metrics.json").read_text())["val"]


def test_run_of_another_space_refused(finished_run):
    _, tmp_path = finished_run
    with pytest.raises(CheckpointError, match=r"mobilenet_v2:\w+.*resnet20:\w+"):
        train(run_cfg(model="resnet20"), tmp_path)
    other = create_space("resnet20", stem="cifar", width_mult=0.125, input_size=8, in_chans=1)
    with pytest.raises(CheckpointError, match=other.fingerprint):
        load_pruningnet(tmp_path / "pruningnet.pt", space=other)


def test_corrupt_pruningnet_file_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"no trained PruningNet at .*train.*supernet="):
        load_pruningnet(tmp_path / "train")  # a run directory without a training run
    (tmp_path / "pruningnet.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pruningnet(tmp_path)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a PruningNet checkpoint"):
        load_pruningnet(tmp_path / "other.pt")


def test_sandwich_step_averages_max_sampled_min():
    space = create_space("resnet20", stem="cifar", width_mult=0.125, input_size=8, in_chans=1)
    pnet = create_pruningnet(space, hidden=4)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss_fn = torch.nn.CrossEntropyLoss()
    sampler = ConfigSampler(space, sandwich=True)
    loss = pruningnet_step(sampler)(pnet, x, y, np.random.default_rng(5), loss_fn)
    configs = sampler.sample(np.random.default_rng(5))
    assert configs[0] == space.max() and configs[-1] == space.min()
    expected = sum(loss_fn(pnet(x, c), y) for c in configs) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pruningnet_param_groups_skip_bn_and_biases():
    space = create_space("resnet20", stem="cifar", width_mult=0.125, input_size=8, in_chans=1)
    pnet = create_pruningnet(space, hidden=4, bn_affine=True)
    decay, no_decay = param_groups(pnet, 0.1)
    names = {id(p): n for n, p in pnet.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert all(n.startswith("bn.") or n.endswith("bias") for n in no_decay_names)
    assert all(
        not n.startswith("bn.") and not n.endswith("bias")
        for n in map(names.get, map(id, decay["params"]))
    )
    assert any(n.startswith("bn.") for n in no_decay_names) and decay["params"]


def test_reference_configs_use_nearest_ratio():
    space = create_space("resnet20", stem="cifar", width_mult=0.125)
    refs = reference_configs(space)  # the paper's 31 ratios have no 0.5: 0.49 is nearest
    assert refs["uniform0.5"].ratios() == (0.49,) * len(space.genes)
    assert refs["max"] == space.max() and refs["min"] == space.min()


def _ddp_train(rank, world, port, out_dir):
    ddp_env(rank, world, port)
    metrics = train(run_cfg(), out_dir)
    assert metrics["steps"] == 2
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_training_with_two_gloo_processes(tmp_path):
    """The same ``train`` under a 2-process Gloo group: 64 images, 16 per rank and step."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_train, args=(2, port, str(tmp_path)), nprocs=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(metrics["val"]) == {"acc_max", "acc_min", "acc_uniform0.5"}
    load_pruningnet(tmp_path)


def test_finished_run_with_other_inputs_refused(finished_run):
    """A finished 1-epoch run asked for 2 epochs (it used to resume and run epoch 2 at lr 0), or
    for more data, is refused naming the key; execution options alone reuse it."""
    out, run = finished_run
    mtime = (run / "pruningnet.pt").stat().st_mtime_ns
    for resume in (False, True):
        with pytest.raises(StaleStageError, match=r"train\.epochs: 1 -> 2") as e:
            train(run_cfg(epochs=2, resume=resume), run)
        assert "1 differ" in str(e.value)
    cfg = run_cfg()
    cfg.data.fake_size = 96
    with pytest.raises(StaleStageError, match=r"data\.fake_size: 80 -> 96"):
        train(cfg, run)
    same = train(run_cfg(log_every=5, progress=False, amp="off", resume=True), run)
    assert same["val"] == out["val"]
    assert (run / "pruningnet.pt").stat().st_mtime_ns == mtime  # nothing was retrained


def test_resume_with_other_lr_after_a_kill_refused(tmp_path, monkeypatch):
    opts = {"epochs": 2, "max_steps_per_epoch": 1, "sandwich": False}
    kill_in_epoch_2(run_cfg(**opts), tmp_path, monkeypatch)
    cfg = run_cfg(**opts, resume=True)
    cfg.optim.lr = 0.1
    with pytest.raises(StaleStageError, match=r"optim\.lr: 0\.05 -> 0\.1"):
        train(cfg, tmp_path)
    assert not (tmp_path / "pruningnet.pt").exists()
    assert train(run_cfg(**opts, resume=True), tmp_path)["epochs"] == 2


def learnable_data(seed: int, classes: int = 10, n: int = 1200):
    """Fake images (each class a random template plus noise), normalised: a learnable signal."""
    fake = make_fake(n, classes, 1, 8, seed=seed)
    return (fake.images.float() / 255 - 0.5) / 0.23, fake.labels


@pytest.fixture(scope="module", params=[0])
def trained_on_signal(request):
    """(pnet, held-out batch, calls of the validation callback) after 2 epochs of 20 steps of
    :func:`train_pruningnet` on a plain ``DataLoader``, with the sandwich rule."""
    from torch.utils.data import DataLoader, TensorDataset

    seed = request.param
    x, y = learnable_data(seed)
    space = create_space(
        "resnet20", stem="cifar", width_mult=0.25, input_size=8, in_chans=1, num_classes=10,
        choices=[0.125, 0.25, 0.5, 0.75, 1.0],
    )  # fmt: skip
    torch.manual_seed(seed)
    pnet = create_pruningnet(space, hidden=16)
    loader = DataLoader(
        TensorDataset(x[:1000], y[:1000]),
        batch_size=50,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    calls = []
    out = train_pruningnet(
        pnet,
        loader,
        epochs=2,
        seed=seed,
        sandwich=True,
        device="cpu",
        optim=OptimConfig(lr=0.2),
        sched=SchedConfig(name="cosine"),
        validate=lambda m: calls.append(m) or {"n": len(calls)},
    )
    assert out["epochs"] == 2 and out["steps"] == 40
    assert [h["val/n"] for h in out["history"]] == [1, 2]
    recalib = [(x[i : i + 100], y[i : i + 100]) for i in range(0, 400, 100)]
    return pnet, recalib, (x[1000:], y[1000:]), calls


def test_train_pruningnet_on_a_plain_loader_learns(trained_on_signal):
    """Trained for seconds on a learnable signal, the max config scores far above chance (0.1)
    with generated weights; the validation callback got the PruningNet itself each epoch."""
    pnet, recalib, held_out, calls = trained_on_signal
    assert len(calls) == 2 and all(m is pnet for m in calls)
    assert score_config(pnet, pnet.space.max(), recalib, [held_out]) > 0.7


def test_proxy_orders_a_much_wider_config_above_a_narrow_one(trained_on_signal):
    """After that training the proxy (generated weights, BN recalibrated) puts the max config
    clearly above the min config (1 to 4 channels a layer)."""
    pnet, recalib, held_out, _ = trained_on_signal
    space = pnet.space
    wide = score_config(pnet, space.max(), recalib, [held_out])
    narrow = score_config(pnet, space.min(), recalib, [held_out])
    assert wide > narrow + 0.3, (wide, narrow)


def test_train_pruningnet_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = create_space("resnet20", stem="cifar", width_mult=0.125, input_size=8, in_chans=1)
    pnet = create_pruningnet(space, hidden=4)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in pnet.parameters()]
    out = train_pruningnet(pnet, [(x, y)], device="cpu", progress=False)
    assert out["steps"] == 1 and not list(tmp_path.iterdir())
    assert any(not torch.equal(a, b) for a, b in zip(before, pnet.parameters(), strict=True))
    with pytest.raises(TypeError, match="epohcs"):
        train_pruningnet(pnet, [(x, y)], epohcs=2)
    # a caller's own options are range-checked (a negative clip norm flipped every gradient)
    with pytest.raises(ValueError, match=r"train\.grad_clip must be positive"):
        train_pruningnet(pnet, [(x, y)], grad_clip=-1.0)
    with pytest.raises(ValueError, match="output directory"):
        train_pruningnet(pnet, [(x, y)], resume=True)


def test_search_on_images_the_pruningnet_trained_on_refused(finished_run, tmp_path):
    """The PruningNet records the split it was trained on; a search split carved with another
    seed (which does share images with that training split) is refused, naming the key."""
    from metaprune.data.identity import SplitOverlapError, require_disjoint_search
    from metaprune.search.api import search

    _, run = finished_run
    pnet = load_pruningnet(run)
    other = run_cfg()
    other.data.split_seed = 1
    labels = build_datasets({**other.data, "search_size": 0}).train.labels  # the official set
    trained = split_train_search(labels, 16, 0)[0]
    assert np.intersect1d(trained, split_train_search(labels, 16, 1)[1]).size > 0
    with pytest.raises(SplitOverlapError, match=r"data\.split_seed=1.*data\.split_seed=0"):
        search(other, tmp_path / "search", run)
    assert not (tmp_path / "search").exists()
    require_disjoint_search(pnet.train_split, run_cfg().data)  # the held-out split: fine
    require_disjoint_search(pnet.train_split, {**run_cfg().data, "root": "moved", "num_workers": 0})
    require_disjoint_search(pnet.train_split, {"name": "fashion_mnist"})  # other images


def test_validation_recalibrates_on_clean_batches_on_request(tmp_path, finished_run):
    """train.recalib_augment=false: the logged accuracies are those of BN recalibrated on the
    clean draw (the default run's are those of the augmented one, test_two_step_training_run);
    the option is part of the identity."""
    out = train(run_cfg(recalib_augment=False), tmp_path)
    pnet, data = load_pruningnet(tmp_path), build_datasets(run_cfg().data)
    clean = recalibration_batches(data.train, 1, 16, augment=False, seed=1)
    val = [next(iter(make_loader(data.search, 8, train=False)))]
    for name, config in reference_configs(pnet.space).items():
        assert score_config(pnet, config, clean, val) == out["val"][f"acc_{name}"], name
    with pytest.raises(StaleStageError, match=r"train\.recalib_augment: True -> False"):
        train(run_cfg(recalib_augment=False), finished_run[1])
