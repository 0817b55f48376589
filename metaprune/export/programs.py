"""Exporters: a pruned network written as programs that run without metaprune.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) ends with an ordinary, smaller network: the winner
of the search, retrained.  The paper stops there; :func:`export_model` writes that network (a
plain :class:`~metaprune.models.pruned.PrunedNet`) as a TorchScript program (``model.ts``), a
``torch.export`` program (``model.pt2``) and ONNX (``model.onnx``), beside ``pruned.pt``
(:mod:`.pruned_file`), ``model.json`` (config, widths, costs, file list) and a ``README.md``
saying how to run them.  The batch dimension of every program is dynamic.

ONNX: by default the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is
used: with equal outputs, it is about 35x faster than the ``torch.export``-based (dynamo) exporter
on a 2-core CPU (1.7 s against 59 s for a half-width MobileNetV2, ``tools/bench_retrain.py
export``); ``onnx_exporter="dynamo"`` selects the latter (the legacy exporter is deprecated
upstream and will go away).  Every file is written to a temporary name and renamed, so an
interrupted export never leaves a half-written program.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaprune.cost import count_flops, count_params
from metaprune.export.pruned_file import FORMAT, pruned_payload, unwrap
from metaprune.io import (
    atomic_path,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from metaprune.models import build_pruned
from metaprune.space import ChannelConfig, ChannelSpace

FORMATS = ("torchscript", "export", "onnx")
FILES = {"torchscript": "model.ts", "export": "model.pt2", "onnx": "model.onnx"}
ONNX_EXPORTERS = ("torchscript", "dynamo")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _clean_copy(model: nn.Module, space: ChannelSpace, config: ChannelConfig) -> nn.Module:
    """A float32 CPU eval-mode copy of ``model`` rebuilt from ``config`` (checks the shapes)."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    clean = build_pruned(space, config)
    try:
        clean.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"model does not have the widths of {config}: {e}") from e
    return clean.float().eval()


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=65536)


def _save_torchscript(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script/save is deprecated"
        program = torch.jit.script(model)
        buf = io.BytesIO()
        torch.jit.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())


def _save_export(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    program = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())


def _save_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int | None
) -> None:
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with atomic_path(path, suffix=path.suffix) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        if exporter == "torchscript":
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            torch.onnx.export(
                model, (x,), str(tmp), dynamo=False, dynamic_axes=axes, opset_version=opset, **names
            )
        else:
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                dynamo=True,
                dynamic_shapes=({0: _batch_dim()},),
                opset_version=opset,
                verbose=False,
                **names,
            )


def export_model(
    model: nn.Module,
    space: ChannelSpace,
    config: ChannelConfig,
    out_dir: str | os.PathLike,
    example_input: torch.Tensor | None = None,
    *,
    formats: Sequence[str] = FORMATS,
    onnx_exporter: str = "torchscript",
    opset: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``model`` (the network of ``config``) to ``out_dir``; return ``{kind: path}``.

    Always writes ``pruned.pt`` and ``model.json``; ``formats`` picks among ``torchscript``
    (``model.ts``), ``export`` (``model.pt2``) and ``onnx`` (``model.onnx``).  The model is copied
    to float32 CPU eval mode first (the caller's module is untouched; ``torch.compile`` and DDP
    wrappers are looked through).  ``example_input`` defaults to random images of the space's
    input shape, batch 2; the batch dimension of every program is dynamic.  ``meta`` is stored
    in ``model.json`` (e.g. the normalisation and test accuracy).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ValueError(
            f"unknown onnx_exporter {onnx_exporter!r}; choose one of {list(ONNX_EXPORTERS)}"
        )
    space.check(config)
    out = Path(out_dir)
    clean = _clean_copy(model, space, config)
    if example_input is None:
        example_input = torch.randn(
            2, *space.input_shape, generator=torch.Generator().manual_seed(0)
        )
    x = example_input.detach().float().cpu()
    if tuple(x.shape[1:]) != space.input_shape:
        raise ValueError(
            f"example_input has shape {tuple(x.shape)}; expected (N, *{space.input_shape})"
        )
    paths = {"pruned": atomic_torch_save(out / "pruned.pt", pruned_payload(clean, space, config))}
    for fmt in FORMATS:  # fixed order, whatever the order of ``formats``
        if fmt not in formats:
            continue
        path = out / FILES[fmt]
        if fmt == "torchscript":
            _save_torchscript(clean, path)
        elif fmt == "export":
            _save_export(clean, x, path)
        else:
            _save_onnx(clean, x, path, onnx_exporter, opset)
        paths[fmt] = path
    info = {
        "format": FORMAT,
        "space": space.describe(),
        "config": config.to_dict(),
        "widths": config.widths(),
        "flops": count_flops(space, config),
        "params": count_params(space, config),
        "input": {"name": INPUT_NAME, "shape": ["N", *space.input_shape], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", space.num_classes]},
        "files": {k: p.name for k, p in paths.items()},
        "onnx_exporter": onnx_exporter if "onnx" in formats else None,
        "torch": torch.__version__,
        "meta": dict(meta or {}),
    }
    paths["json"] = atomic_write_json(out / "model.json", info)
    paths["readme"] = atomic_write_text(out / "README.md", _readme(info))
    return paths


def _readme(info: Mapping[str, Any]) -> str:
    """How to run the exported programs without metaprune."""
    c, h, w = info["input"]["shape"][1:]
    norm = info["meta"].get("normalization")
    pre = (
        f"normalised per channel with mean {norm['mean']} and std {norm['std']} (after scaling "
        "pixels to [0, 1])"
        if norm
        else "normalised as during training"
    )
    files = set(info["files"].values())
    lines = [
        f"# Pruned {info['space']['family']}: {info['flops']:,} MACs, {info['params']:,} params",
        "",
        f"Input `{INPUT_NAME}`: float32 images of shape (N, {c}, {h}, {w}), {pre}; output "
        f"`{OUTPUT_NAME}`: (N, {info['output']['shape'][1]}) class scores. The batch size N is "
        "free.",
        "",
        "```python",
        "import torch",
    ]
    if "model.ts" in files:
        lines += ['net = torch.jit.load("model.ts")            # TorchScript', "y = net(x)"]
    if "model.pt2" in files:
        lines += ['net = torch.export.load("model.pt2").module()  # torch.export', "y = net(x)"]
    if "model.onnx" in files:
        lines += [
            "import onnxruntime as ort                   # ONNX",
            'y = ort.InferenceSession("model.onnx").run(None, {"input": x.numpy()})[0]',
        ]
    lines += [
        "import metaprune                             # only to get the nn.Module back",
        'net = metaprune.load_pruned(".")',
        "```",
        "",
        "`model.json` holds the channel configuration, the widths of every gene and the costs.",
        "",
    ]
    return "\n".join(lines)
