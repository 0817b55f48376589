"""Export a pruned network as deployable programs, check them, and load it back.

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

One module a job: :mod:`.pruned_file` (the ``pruned.pt`` format, :func:`read_pruned`,
:func:`load_pruned`), :mod:`.programs` (:func:`export_model`: TorchScript, ``torch.export``,
ONNX, ``model.json``, ``README.md``) and :mod:`.check` (:func:`check_export` and friends).
"""

from metaprune.export.check import (
    ExportMismatchError,
    check_export,
    check_exports,
    check_onnx,
    run_program,
)
from metaprune.export.programs import FILES, FORMATS, ONNX_EXPORTERS, export_model
from metaprune.export.pruned_file import (
    FORMAT,
    PrunedFile,
    load_pruned,
    pruned_path,
    pruned_payload,
    read_pruned,
    unwrap,
)

__all__ = [
    "FILES",
    "FORMAT",
    "FORMATS",
    "ONNX_EXPORTERS",
    "ExportMismatchError",
    "PrunedFile",
    "check_export",
    "check_exports",
    "check_onnx",
    "export_model",
    "load_pruned",
    "pruned_path",
    "pruned_payload",
    "read_pruned",
    "run_program",
    "unwrap",
]
