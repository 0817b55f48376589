"""PruningNet training (``metaprune.train``) on tiny fake data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ddp_env
from omegaconf import OmegaConf

import metaprune.train as mtrain
from metaprune import build_pruned, create_space
from metaprune.engine import param_groups
from metaprune.io import CheckpointError, safe_torch_load
from metaprune.pruningnet import ConfigSampler, create_pruningnet, load_pruningnet
from metaprune.train import pruningnet_step, reference_configs, train


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
    assert all(0.0 <= v <= 1.0 for v in out["val"].values())
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

    real = mtrain.pruningnet_step

    def killing_step(sampler):
        step, calls = real(sampler), []

        def wrapped(*args):
            calls.append(1)
            if len(calls) == 2:  # the step of epoch 2
                raise KeyboardInterrupt
            return step(*args)

        return wrapped

    monkeypatch.setattr(mtrain, "pruningnet_step", killing_step)
    with pytest.raises(KeyboardInterrupt):
        train(run_cfg(**opts), tmp_path / "run")
    assert not (tmp_path / "run" / "pruningnet.pt").exists()
    monkeypatch.setattr(mtrain, "pruningnet_step", real)
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
