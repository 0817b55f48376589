"""Export a pruned network as deployable programs, and load it back.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3) ends with an ordinary, smaller network: the winner of
the search, retrained.  The paper stops there; here that network (a plain
:class:`~metaprune.models.pruned.PrunedNet`) is written in forms that run without metaprune:

=============  =============================================  ====================================
file           what                                           load without metaprune
=============  =============================================  ====================================
``model.ts``   TorchScript program (``torch.jit.script``)     ``torch.jit.load("model.ts")``
``model.pt2``  ``torch.export`` program (batch dim dynamic)   ``torch.export.load(p).module()``
``model.onnx`` ONNX, input ``input`` (N, C, H, W) float32,     ``onnxruntime.InferenceSession(p)``
               output ``logits`` (N, classes), batch dynamic  ``.run(None, {"input": x})``
``pruned.pt``  state dict + space + config (for metaprune)    ``metaprune.load_pruned(p)``
``model.json`` config, widths, FLOPs, params, file list       any JSON reader
``README.md``  these instructions, with the input shape        --
=============  =============================================  ====================================

Inputs are what the training data loader yields: float32 images already normalised with the data
set's mean and standard deviation (recorded in ``model.json`` under ``meta`` when the caller knows
them, as :func:`metaprune.retrain.retrain` does).

ONNX: by default the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is
used: with equal outputs, it is about 35x faster than the ``torch.export``-based (dynamo) exporter
on a 2-core CPU (1.7 s against 59 s for a half-width MobileNetV2, ``tools/bench_retrain.py
export``); ``onnx_exporter="dynamo"`` selects the latter (the legacy exporter is deprecated
upstream and will go away).  Every file is written
to a temporary name and renamed, so an interrupted export never leaves a half-written program.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metaprune.cost import count_flops, count_params
from metaprune.io import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    safe_torch_load,
)
from metaprune.models import build_pruned, create_space
from metaprune.space import ChannelConfig, ChannelSpace

FORMAT = "metaprune.pruned/1"
FORMATS = ("torchscript", "export", "onnx")
FILES = {"torchscript": "model.ts", "export": "model.pt2", "onnx": "model.onnx"}
ONNX_EXPORTERS = ("torchscript", "dynamo")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportMismatchError(AssertionError):
    """An exported program's outputs differ from the PyTorch model's beyond tolerance."""


@dataclass(frozen=True)
class PrunedFile:
    """The contents of a ``pruned.pt``: the space, the config and the network's weights."""

    space: ChannelSpace
    config: ChannelConfig
    state_dict: dict[str, torch.Tensor]

    def build(self) -> nn.Module:
        """The network with these weights loaded strictly, in eval mode."""
        model = build_pruned(self.space, self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and ``DistributedDataParallel`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _clean_copy(model: nn.Module, space: ChannelSpace, config: ChannelConfig) -> nn.Module:
    """A float32 CPU eval-mode copy of ``model`` rebuilt from ``config`` (checks the shapes)."""
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    clean = build_pruned(space, config)
    try:
        clean.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"model does not have the widths of {config}: {e}") from e
    return clean.float().eval()


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
    with _atomic_path(path) as tmp, warnings.catch_warnings():
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


def pruned_payload(model: nn.Module, space: ChannelSpace, config: ChannelConfig) -> dict[str, Any]:
    """What ``pruned.pt`` holds: plain data and tensors only (loads with ``weights_only=True``)."""
    space.check(config)
    return {
        "format": FORMAT,
        "space": space.describe(),
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }


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


# -- loading ------------------------------------------------------------------------------------
_PROGRAM_HINTS = {
    ".ts": "a TorchScript program: load it with torch.jit.load",
    ".pt2": "a torch.export program: load it with torch.export.load(path).module()",
    ".onnx": "an ONNX model: run it with onnxruntime.InferenceSession",
}


def _pruned_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        if not (p / "pruned.pt").is_file():
            raise CheckpointError(f"{p} holds no pruned.pt: not an export directory")
        return p / "pruned.pt"
    if p.suffix in _PROGRAM_HINTS:
        raise CheckpointError(
            f"{p} is {_PROGRAM_HINTS[p.suffix]}; load_pruned reads pruned.pt or its directory"
        )
    return p


def read_pruned(path: str | os.PathLike) -> PrunedFile:
    """Read a ``pruned.pt`` (or the export directory holding it) without building the network.

    The space is rebuilt from its description (``create_space(family, choices=ratios,
    **options)``) and must have the recorded fingerprint; anything else raises
    :class:`~metaprune.io.CheckpointError` naming the problem.
    """
    p = _pruned_path(path)
    data = safe_torch_load(p)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format", sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{p} is not a pruned-model file (format {FORMAT!r}, written by export_model or "
            f"retrain); found {found}"
        )
    desc = data["space"]
    space = create_space(desc["family"], choices=desc["ratios"], **desc["options"])
    if space.fingerprint != desc["fingerprint"]:
        raise CheckpointError(
            f"{p}: the {desc['family']} space rebuilt here has fingerprint {space.fingerprint}, "
            f"the file was written for {desc['fingerprint']} (model code changed?)"
        )
    return PrunedFile(space, space.from_json(data["config"]), data["state_dict"])


def load_pruned(path: str | os.PathLike) -> nn.Module:
    """The pruned network saved by :func:`export_model` (``pruned.pt`` or its directory), in eval
    mode on the CPU, weights loaded strictly."""
    return read_pruned(path).build()


# -- checking -----------------------------------------------------------------------------------
def run_program(path: str | os.PathLike, inputs: torch.Tensor) -> np.ndarray:
    """Outputs of an exported program (``.ts``, ``.pt2``, ``.onnx`` or ``pruned.pt``) on
    ``inputs``, loaded the way a user without metaprune would (except ``pruned.pt``)."""
    p = Path(path)
    x = inputs.detach().float().cpu()
    if p.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                "checking an ONNX export needs the optional dependency onnxruntime "
                "(pip install onnxruntime)"
            ) from e
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if p.suffix == ".ts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            module = torch.jit.load(str(p), map_location="cpu")
    elif p.suffix == ".pt2":
        module = torch.export.load(p).module()
    else:
        module = load_pruned(p)
    with torch.inference_mode():
        return module(x).numpy()


def check_export(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> float:
    """Max absolute difference between an exported program and ``model`` on ``inputs``;
    raises :class:`ExportMismatchError` beyond ``atol + rtol * |reference|``.

    The reference is a float32 CPU eval-mode copy of ``model`` (a model trained on a GPU is
    compared without TF32 or autocast noise; ``model`` itself is untouched)."""
    ref_model = copy.deepcopy(unwrap(model)).float().cpu().eval()
    with torch.inference_mode():
        ref = ref_model(inputs.detach().float().cpu())
    got = run_program(path, inputs)
    ref_np = ref.numpy()
    if got.shape != ref_np.shape:
        raise ExportMismatchError(f"{path}: output shape {got.shape}, PyTorch {ref_np.shape}")
    diff = float(np.abs(got - ref_np).max())
    if not np.allclose(got, ref_np, rtol=rtol, atol=atol):
        raise ExportMismatchError(
            f"{path}: outputs differ from PyTorch by up to {diff:.3g} (rtol {rtol}, atol {atol})"
        )
    return diff


def check_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> float:
    """ONNX Runtime outputs of ``path`` against ``model`` (see :func:`check_export`); needs the
    optional dependency ``onnxruntime``."""
    if Path(path).suffix != ".onnx":
        raise ValueError(f"check_onnx expects a .onnx file, got {path}")
    return check_export(path, model, inputs, rtol=rtol, atol=atol)


def check_exports(
    paths: Mapping[str, os.PathLike], model: nn.Module, inputs: torch.Tensor
) -> dict[str, float | None]:
    """:func:`check_export` for every program in ``paths`` (as returned by
    :func:`export_model`); an ONNX check without onnxruntime installed is ``None``."""
    out: dict[str, float | None] = {}
    for kind in FORMATS:
        if kind not in paths:
            continue
        try:
            out[kind] = check_export(paths[kind], model, inputs)
        except ImportError:
            out[kind] = None
    return out


__all__ = [
    "ExportMismatchError",
    "PrunedFile",
    "check_export",
    "check_exports",
    "check_onnx",
    "export_model",
    "load_pruned",
    "read_pruned",
    "run_program",
]
