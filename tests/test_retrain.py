"""Retraining: result.json, skip/resume, config resolution and its errors, inherit, distillation."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import WidthScorer
from omegaconf import OmegaConf
from torch import nn

from metaprune import build_pruned, count_flops, count_params, create_space
from metaprune.data import build_datasets, make_loader
from metaprune.engine import evaluate
from metaprune.engine.identity import StaleStageError
from metaprune.export import export_model, load_pruned
from metaprune.io import CheckpointError, atomic_torch_save, atomic_write_json
from metaprune.pruningnet import create_pruningnet
from metaprune.pruningnet.checkpoint import FORMAT as PRUNINGNET_FORMAT
from metaprune.retrain import (
    RetrainConfig,
    initial_model,
    job,
    kd_loss,
    kd_step,
    resolve_config,
    retrain,
    retrain_label,
)
from metaprune.search import SearchConfig, default_costs, run_search

CHOICES = [0.25, 0.5, 1.0]


def make_cfg(retrain_group=None, **train):
    """A whole run config: tiny ResNet-20 on 12 px fake data with 4 classes."""
    return OmegaConf.create(
        {
            "model": {"name": "resnet20", "width_mult": 0.25},
            "space": {"choices": CHOICES},
            "data": {
                "name": "fake",
                "fake_size": 96,
                "fake_test_size": 40,
                "fake_classes": 4,
                "image_size": 12,
                "search_size": 0.25,
            },
            "train": {
                "epochs": 1,
                "batch_size": 16,
                "eval_batch_size": 64,
                "progress": False,
                "log_every": 1,
                "max_steps_per_epoch": 3,
                **train,
            },
            "optim": {"lr": 0.05},
            "sched": {"name": "cosine"},
            "retrain": {"latency_repeats": 2, "export_formats": ["onnx"], **(retrain_group or {})},
        }
    )


@pytest.fixture(scope="module")
def space():
    """The space ``make_cfg`` builds (fake data: 3 channels, 12 px, 4 classes)."""
    return create_space(
        "resnet20", choices=CHOICES, width_mult=0.25, in_chans=3, input_size=12, num_classes=4
    )


# -- the job ------------------------------------------------------------------------------------
def _interrupted(monkeypatch, cfg, out, after_steps=3):
    """Run ``retrain(cfg, out)`` and kill it (an exception) at step ``after_steps + 1``."""
    real, calls = job.supervised_step, []

    def killing_step(*args):
        calls.append(1)
        if len(calls) > after_steps:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(job, "supervised_step", killing_step)
    with pytest.raises(KeyboardInterrupt):
        retrain(cfg, out)
    monkeypatch.setattr(job, "supervised_step", real)


def test_retrain_writes_result_resumes_and_skips(space, tmp_path, monkeypatch):
    out = tmp_path / "run"
    two = {"uniform": 0.5, "epochs": 2}
    _interrupted(monkeypatch, make_cfg(two), out)  # killed in epoch 2 (3 steps an epoch)
    assert (out / "checkpoint.pt").is_file() and not (out / "result.json").exists()

    # an interrupted run continues from its checkpoint with train.resume, only then
    with pytest.raises(CheckpointError, match="resume"):
        retrain(make_cfg(two), out)
    result = retrain(make_cfg(two, resume=True), out)
    assert result["epochs"] == 2 and result["steps"] == 6
    assert [h["epoch"] for h in result["history"]] == [1, 2]

    config = space.uniform(0.5)
    assert result == json.loads((out / "result.json").read_text())
    assert result["config"]["genes"] == list(config.indices)
    assert result["flops"] == count_flops(space, config)
    assert result["params"] == count_params(space, config)
    assert 0 < result["flops_ratio"] < 1
    assert result["test_samples"] == 40
    assert result["latency_ms"] > 0
    assert "acc" in result["val"]  # per-epoch validation on the search split
    assert set(result["export"]["files"]) == {"pruned", "onnx", "json", "readme"}
    assert result["export"]["max_abs_diff"]["onnx"] < 1e-4
    assert list((out / "tb").glob("events.*"))

    # killed and resumed trains what one uninterrupted run trains
    whole = retrain(make_cfg(two), tmp_path / "whole")
    losses = [[h["train_loss"] for h in r["history"]] for r in (result, whole)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert result["test_accuracy"] == whole["test_accuracy"]

    # the exported network is the trained one: its test accuracy is reproduced
    model = load_pruned(out / "export")
    test = build_datasets(make_cfg(two).data).test
    assert evaluate(model, make_loader(test, 16, train=False)) == (result["test_accuracy"], 40)
    info = json.loads((out / "export" / "model.json").read_text())
    assert info["meta"]["test_accuracy"] == result["test_accuracy"]
    assert info["meta"]["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert sum(p.numel() for p in model.parameters()) == result["params"]

    # a finished run is not trained again
    stamp = (out / "checkpoint.pt").stat().st_mtime_ns
    assert retrain(make_cfg(two), out) == result
    assert (out / "checkpoint.pt").stat().st_mtime_ns == stamp

    # ... nor reused when its recipe changed: the error names the key and the values
    for group, train, key in (
        ({"epochs": 3}, {}, "train.epochs: 2 -> 3"),
        ({"optim": {"lr": 0.1}}, {}, "optim.lr: 0.05 -> 0.1"),
        ({}, {"batch_size": 8}, "train.batch_size: 16 -> 8"),
        ({}, {"seed": 1}, "train.seed"),
    ):
        with pytest.raises(StaleStageError, match=re.escape(key)):
            retrain(make_cfg({**two, **group}, resume=True, **train), out)
    with pytest.raises(StaleStageError, match=r"data\.fake_size"):
        retrain(OmegaConf.merge(make_cfg(two), {"data": {"fake_size": 80}}), out)
    assert (out / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert retrain(make_cfg(two, device="cpu", log_every=5), out) == result  # execution only
    # ... and the train options only PruningNet training reads
    pnet_only = {"sampling": "flops_uniform", "sandwich": True, "recalib_augment": False}
    assert retrain(make_cfg(two, recalib_batches=3, **pnet_only), out) == result

    # a killed run resumed with another learning rate is refused too (its checkpoint's identity)
    killed = tmp_path / "killed"
    _interrupted(monkeypatch, make_cfg(two), killed)
    with pytest.raises(StaleStageError, match=re.escape("optim.lr: 0.05 -> 0.1")):
        retrain(make_cfg({**two, "optim": {"lr": 0.1}}, resume=True), killed)

    # ... and a directory of another retrain is refused
    with pytest.raises(CheckpointError, match="fingerprint"):
        retrain(make_cfg({"uniform": 1.0}), out)


def test_retrain_with_inherit_and_distillation(space, tmp_path):
    teacher_cfg = space.max()
    teacher = build_pruned(space, teacher_cfg)
    export_model(teacher, space, teacher_cfg, tmp_path / "teacher", formats=())
    pnet_path = save_pruningnet(space, tmp_path / "pnet.pt")
    group = {
        "uniform": 0.5,
        "init": "inherit",
        "pruningnet": str(pnet_path),
        "kd": {"teacher": str(tmp_path / "teacher"), "temperature": 2.0, "weight": 0.5},
        "export": False,
        "latency_repeats": 0,
        "optim": {"lr": 0.01},
    }
    cfg = make_cfg(group, max_steps_per_epoch=2)
    assert retrain_label(cfg) == "uniform0.5-inherit-kd"
    result = retrain(cfg, tmp_path / "run")
    assert result["steps"] == 2
    assert result["retrain"]["kd"]["temperature"] == 2.0
    assert result["retrain"]["init"] == "inherit"
    assert result["latency_ms"] is None
    assert set(result["export"]["files"]) == {"pruned", "json", "readme"}
    assert np.isfinite(result["history"][0]["train_loss"])
    assert retrain(cfg, tmp_path / "run") == result

    # another PruningNet or teacher in the same files: the content hashes differ
    torch.manual_seed(1)
    other_teacher = build_pruned(space, teacher_cfg)
    export_model(other_teacher, space, teacher_cfg, tmp_path / "teacher", formats=())
    with pytest.raises(StaleStageError, match=r"kd\.teacher"):
        retrain(cfg, tmp_path / "run")
    export_model(teacher, space, teacher_cfg, tmp_path / "teacher", formats=())
    assert retrain(cfg, tmp_path / "run") == result
    save_pruningnet(space, pnet_path, seed=1)
    with pytest.raises(StaleStageError, match=r"init\.pruningnet"):
        retrain(cfg, tmp_path / "run")
    missing = make_cfg({**group, "pruningnet": str(tmp_path / "nope.pt")})
    with pytest.raises(CheckpointError, match=r"retrain\.pruningnet: .*nope\.pt does not exist"):
        retrain(missing, tmp_path / "run_missing")

    other = create_space("resnet20", choices=CHOICES, width_mult=0.25, num_classes=7)
    export_model(build_pruned(other, other.max()), other, other.max(), tmp_path / "t7", formats=())
    bad = {**group, "kd": {"teacher": str(tmp_path / "t7")}}
    with pytest.raises(ValueError, match="teacher"):
        retrain(make_cfg(bad), tmp_path / "run7")


# -- config resolution --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search_dir(space, tmp_path_factory):
    cfg = SearchConfig(
        population=8,
        generations=2,
        parents=3,
        mutation_children=2,
        crossover_children=2,
        targets=[0.3, 0.6],
        tensorboard=False,
    )
    out = tmp_path_factory.mktemp("search")
    run_search(space, WidthScorer(), default_costs(space), cfg, out)
    return out


def rc(**kw) -> RetrainConfig:
    return RetrainConfig(**kw).validate()


def test_resolve_config_sources(space, search_dir, tmp_path):
    max_flops = count_flops(space, space.max())
    assert resolve_config(rc(uniform=0.5), space) == space.uniform(0.5)
    assert resolve_config(rc(uniform=0.49), space) == space.uniform(0.5)  # nearest choice

    winner = resolve_config(rc(from_search=str(search_dir), target=0.6), space)
    assert count_flops(space, winner) <= 0.6 * max_flops
    # not one of the search's targets: the best scored config under that bound
    other = resolve_config(rc(from_search=str(search_dir), target=0.45), space)
    assert count_flops(space, other) <= 0.45 * max_flops

    # a JSON file: to_json(), a winners.json entry, an export's model.json
    (tmp_path / "c.json").write_text(winner.to_json())
    assert resolve_config(rc(config=str(tmp_path / "c.json")), space) == winner
    entry = json.loads((search_dir / "winners.json").read_text())[1]
    atomic_write_json(tmp_path / "w.json", entry)
    assert resolve_config(rc(config=str(tmp_path / "w.json")), space) == winner
    paths = export_model(build_pruned(space, winner), space, winner, tmp_path / "e", formats=())
    assert resolve_config(rc(config=str(paths["json"])), space) == winner

    assert retrain_label({"retrain": {"from_search": "s", "target": 0.6}}) == "target0.6"
    assert retrain_label({"from_search": "s"}) == "winner"
    assert retrain_label({"config": "runs/best config.json"}) == "config-best-config"


def test_another_target_keeps_the_searchs_constraints(space, tmp_path):
    """A target the search did not run is answered from its table within its constraints: the
    uniform baselines in the table are scored whatever the constraints."""

    class Narrowest:  # a network is as good as its narrowest gene: uniform configs win
        def score(self, configs):
            return [min(c.ratios()) for c in configs]

    cfg = SearchConfig(
        population=8, generations=2, parents=3, mutation_children=2, crossover_children=2,
        targets=[0.3], constraints={"params": 0.2}, tensorboard=False,
    )  # fmt: skip
    run_search(space, Narrowest(), default_costs(space), cfg, tmp_path)
    uniform = space.uniform(0.5)  # the best row under 0.6 of the FLOPs, but over the params
    assert count_params(space, uniform) > 0.2 * count_params(space, space.max())
    got = resolve_config(rc(from_search=str(tmp_path), target=0.6), space)
    assert got != uniform
    assert count_params(space, got) <= 0.2 * count_params(space, space.max())


def test_resolve_config_errors(space, search_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a channel config"):
        resolve_config(rc(), space)
    with pytest.raises(ValueError, match=r"several .*retrain\.config, retrain\.uniform"):
        resolve_config(rc(config="a.json", uniform=0.5), space)
    with pytest.raises(ValueError, match="target"):
        resolve_config(rc(uniform=0.5, target=0.5), space)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_config(rc(config=str(tmp_path / "missing.json")), space)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_config(rc(config=str(tmp_path / "bad.json")), space)
    other = create_space("resnet20", choices=CHOICES, width_mult=0.5, input_size=12)
    (tmp_path / "other.json").write_text(other.uniform(0.5).to_json())
    with pytest.raises(ValueError, match="space"):
        resolve_config(rc(config=str(tmp_path / "other.json")), space)

    with pytest.raises(ValueError, match="2 winners"):
        resolve_config(rc(from_search=str(search_dir)), space)
    with pytest.raises(ValueError, match="no scored config"):
        resolve_config(rc(from_search=str(search_dir), target=0.001), space)
    with pytest.raises(ValueError, match="searched space"):
        resolve_config(rc(from_search=str(search_dir), target=0.6), other)
    with pytest.raises(CheckpointError, match="no finished search"):
        resolve_config(rc(from_search=str(tmp_path)), space)

    with pytest.raises(ValueError, match="init"):
        rc(uniform=0.5, init="pretrained")
    with pytest.raises(ValueError, match="pruningnet"):
        rc(uniform=0.5, init="inherit")
    with pytest.raises(ValueError, match="export_formats"):
        rc(uniform=0.5, export_formats=["tflite"])
    with pytest.raises(Exception, match="epoch"):
        RetrainConfig.from_any({"uniform": 0.5, "epoch": 3})  # a typo fails at start-up


# -- inherit and distillation -------------------------------------------------------------------
def save_pruningnet(space, path, seed=0):
    """A (randomly initialised) PruningNet saved as ``train`` saves it."""
    torch.manual_seed(seed)
    pnet = create_pruningnet(space, hidden=8)
    for buf_name, buf in pnet.named_buffers():  # non-trivial per-choice BN statistics
        if buf_name.endswith("running_mean"):
            buf.copy_(torch.randn_like(buf) * 0.1)
        elif buf_name.endswith("running_var"):
            buf.copy_(torch.rand_like(buf) + 0.5)
    pcfg = asdict(pnet.config)
    payload = {
        "format": PRUNINGNET_FORMAT,
        "space": space.describe(),
        "pruningnet": pcfg,
        "state_dict": pnet.state_dict(),
    }
    return atomic_torch_save(path, payload)


def test_inherit_starts_from_the_generated_weights(space, tmp_path):
    from metaprune.pruningnet import load_pruningnet

    path = save_pruningnet(space, tmp_path / "pruningnet.pt")
    config = space.sample(5)
    x = torch.randn(5, *space.input_shape)
    pnet = load_pruningnet(path, space=space).eval()
    with torch.no_grad():
        expected = pnet(x, config)
        inherited = initial_model(
            rc(uniform=0.5, init="inherit", pruningnet=str(path)), space, config
        )
        scratch = initial_model(rc(uniform=0.5), space, config)
        torch.testing.assert_close(inherited.eval()(x), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(scratch.eval()(x), expected, atol=1e-3)


def test_kd_loss_differs_from_cross_entropy(space):
    torch.manual_seed(0)
    ce = nn.CrossEntropyLoss()
    student = build_pruned(space, space.uniform(0.5))
    teacher = build_pruned(space, space.max()).eval()
    x, y = torch.randn(8, *space.input_shape), torch.randint(0, 4, (8,))
    rng = np.random.default_rng(0)
    plain = ce(student(x), y)
    distilled = kd_step(teacher, temperature=4.0, weight=0.9)(student, x, y, rng, ce)
    assert not torch.allclose(distilled, plain)
    distilled.backward()  # gradients reach the student only
    assert all(p.grad is None for p in teacher.parameters())
    assert student.classifier.weight.grad is not None
    # weight 0 is plain cross-entropy; a teacher equal to the student adds no KL term
    torch.testing.assert_close(kd_step(teacher, 4.0, 0.0)(student, x, y, rng, ce), plain)
    logits = torch.randn(8, 4)
    torch.testing.assert_close(kd_loss(logits, logits, y, ce, 4.0, 0.9), 0.1 * ce(logits, y))
