"""Export: every program equals the PyTorch model; ``load_pruned`` round trip; bad files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import trained_like

from metaprune import build_pruned, count_flops, count_params, create_space, list_models
from metaprune.export import (
    ExportMismatchError,
    check_export,
    check_exports,
    check_onnx,
    export_model,
    load_pruned,
    read_pruned,
)
from metaprune.io import CheckpointError, atomic_torch_save


@pytest.fixture(scope="module")
def space():
    # resnet20: identity and conv shortcuts; the smallest graph for torch.export (the slow part)
    return create_space(
        "resnet20", choices=[0.25, 0.5, 1.0], width_mult=0.25, input_size=12, num_classes=5
    )


@pytest.fixture(scope="module")
def exported(space, tmp_path_factory):
    config = space.sample(3)
    model = trained_like(build_pruned(space, config))
    out = tmp_path_factory.mktemp("export")
    paths = export_model(model, space, config, out, meta={"note": "test"})
    return model, config, paths


def test_export_writes_every_file_and_model_json(space, exported):
    _, config, paths = exported
    assert set(paths) == {"pruned", "torchscript", "export", "onnx", "json", "readme"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    info = json.loads(paths["json"].read_text())
    assert info["flops"] == count_flops(space, config)
    assert info["params"] == count_params(space, config)
    assert info["widths"] == config.widths()
    assert info["config"]["genes"] == list(config.indices)
    assert info["meta"] == {"note": "test"}
    readme = paths["readme"].read_text()
    assert all(f in readme for f in ("model.ts", "model.pt2", "model.onnx", "(N, 3, 12, 12)"))
    leftovers = [p for p in paths["json"].parent.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary files left behind
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {k: p.stat().st_mode & 0o777 for k, p in paths.items()}
    assert modes == dict.fromkeys(paths, 0o666 & ~umask)  # readable as the umask allows


def test_exported_programs_equal_pytorch(exported):
    model, _, paths = exported
    x = torch.randn(3, 3, 12, 12)  # batch 3: not the export example's batch, which is dynamic
    diffs = check_exports(paths, model, x)
    assert set(diffs) == {"torchscript", "export", "onnx"}
    assert all(d is not None and d < 1e-4 for d in diffs.values()), diffs
    assert check_export(paths["pruned"], model, x, rtol=0, atol=0) == 0.0


def test_check_onnx_detects_a_different_model(space, exported):
    model, config, paths = exported
    other = trained_like(build_pruned(space, config), seed=1)
    x = torch.randn(2, 3, 12, 12)
    assert check_onnx(paths["onnx"], model, x) < 1e-4
    with pytest.raises(ExportMismatchError, match="differ"):
        check_onnx(paths["onnx"], other, x)
    with pytest.raises(ValueError, match=r"\.onnx"):
        check_onnx(paths["torchscript"], model, x)


def test_load_pruned_round_trip(space, exported):
    model, config, paths = exported
    for where in (paths["pruned"], paths["pruned"].parent):
        loaded = load_pruned(where)
        assert not loaded.training
        sd, ref = loaded.state_dict(), model.state_dict()
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)
    f = read_pruned(paths["pruned"])
    assert f.config == config and f.space.fingerprint == space.fingerprint


def test_export_does_not_touch_the_callers_model(space, tmp_path):
    config = space.uniform(0.5)
    model = build_pruned(space, config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, space, config, tmp_path, formats=())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "model.json", "pruned.pt"]


def test_export_bad_input(space, tmp_path):
    config = space.uniform(0.5)
    model = build_pruned(space, config)
    with pytest.raises(ValueError, match="widths"):
        export_model(build_pruned(space, space.max()), space, config, tmp_path)
    with pytest.raises(ValueError, match="format"):
        export_model(model, space, config, tmp_path, formats=["tflite"])
    with pytest.raises(ValueError, match="onnx_exporter"):
        export_model(model, space, config, tmp_path, onnx_exporter="tf2onnx")
    with pytest.raises(ValueError, match="example_input"):
        export_model(model, space, config, tmp_path, torch.randn(1, 3, 8, 8), formats=())
    other = create_space("resnet20", choices=[0.5, 1.0], width_mult=0.25, input_size=12)
    with pytest.raises(ValueError, match="space"):
        export_model(model, other, config, tmp_path)


def test_load_pruned_bad_files(space, exported, tmp_path):
    _, _, paths = exported
    with pytest.raises(CheckpointError, match=r"torch\.jit\.load"):
        load_pruned(paths["torchscript"])
    with pytest.raises(CheckpointError, match="onnxruntime"):
        load_pruned(paths["onnx"])
    with pytest.raises(CheckpointError, match=r"no pruned\.pt"):
        load_pruned(tmp_path)
    foreign = atomic_torch_save(tmp_path / "other.pt", {"state_dict": {}, "epoch": 3})
    with pytest.raises(CheckpointError, match="not a pruned-model file"):
        load_pruned(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pruned(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pruned(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "name,stem",
    [("resnet18", "imagenet")]  # strided stem, max pool, conv shortcuts
    + [pytest.param(n, "cifar", marks=pytest.mark.slow) for n in list_models()],
)
def test_every_family_scripts(name, stem, tiny_space, tmp_path):
    space = tiny_space(name, stem=stem)
    config = space.sample(0)
    model = trained_like(build_pruned(space, config))
    paths = export_model(model, space, config, tmp_path, formats=["torchscript"])
    x = torch.randn(2, *space.input_shape)
    assert check_export(paths["torchscript"], model, x) < 1e-4


@pytest.mark.slow
def test_dynamo_onnx_exporter(space, tmp_path):
    config = space.uniform(0.5)
    model = trained_like(build_pruned(space, config))
    paths = export_model(model, space, config, tmp_path, formats=["onnx"], onnx_exporter="dynamo")
    assert check_onnx(paths["onnx"], model, torch.randn(3, 3, 12, 12)) < 1e-4
