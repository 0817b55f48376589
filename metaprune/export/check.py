"""Checks: every exported program computes what the PyTorch network computes.

Beyond MetaPruning (Liu et al., ICCV 2019), which ships no deployable programs: each program
written by :func:`~metaprune.export.programs.export_model` is loaded the way a user without
metaprune would (``torch.jit.load``, ``torch.export.load``, an ONNX Runtime session) and its
outputs are compared with a float32 CPU eval-mode copy of the network; a difference beyond
tolerance raises :class:`ExportMismatchError`.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metaprune.export.programs import FORMATS
from metaprune.export.pruned_file import load_pruned, unwrap


class ExportMismatchError(AssertionError):
    """An exported program's outputs differ from the PyTorch model's beyond tolerance."""


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
