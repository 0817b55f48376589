"""Retrain a pruned network, report it, export it (MetaPruning, Liu et al., ICCV 2019, sec. 3.3-4).

The paper ends by building the winner of the search as an ordinary network and training it from
scratch.  ``retrain(cfg, out_dir)`` does that for a :class:`~metaprune.space.ChannelConfig` taken
from exactly one of

* ``retrain.config``: a JSON file holding a config (``ChannelConfig.to_json()``, a winner entry
  of ``winners.json`` or an export's ``model.json``),
* ``retrain.from_search`` (a search run directory) and ``retrain.target`` (which winner),
* ``retrain.uniform``: every gene at one width ratio (the uniform-width baseline),

with the same :class:`~metaprune.engine.Trainer` as PruningNet training (schedule, AMP, DDP,
checkpoints, resume, TensorBoard): the groups ``train``, ``optim``, ``sched`` are shared, and
``retrain.epochs`` / ``retrain.train`` / ``retrain.optim`` / ``retrain.sched`` override them.

Beyond the paper:

* ``retrain.init=inherit`` starts from the weights the PruningNet generates for the config
  (``pnet.generate(config)``) instead of a random initialisation, then fine-tunes;
* knowledge distillation (Hinton et al., 2015) from a teacher network: the loss is
  ``(1 - w) * CE(student, y) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.  The
  teacher is a pruned network saved by :func:`~metaprune.export.export_model` (``pruned.pt`` or
  its export directory, e.g. the retrained max-width network), read with
  :func:`~metaprune.export.load_pruned`.

After training, the network is scored once on the official test split (never used for any
choice: the per-epoch validation runs on the ``search`` split), its FLOPs, parameters and measured
latency (batch 1, CPU, median of interleaved repeats) go to ``result.json`` and TensorBoard, and it
is exported (TorchScript, ``torch.export``, ONNX, checked against PyTorch) to ``export/``.  A
finished run directory called again returns its ``result.json`` without training; an interrupted
one continues with ``train.resume=true``; either only with the inputs it was made from (its stage
identity), else a ``StaleStageError`` names the keys that differ.

One module a job: :mod:`.config` (the ``retrain`` group), :mod:`.source` (which config, the run
directory's name), :mod:`.distill` (the teacher and the loss), :mod:`.job` (:func:`retrain`).
"""

from metaprune.retrain.config import INITS, KDConfig, RetrainConfig, recipe
from metaprune.retrain.distill import kd_loss, kd_step, load_teacher
from metaprune.retrain.job import (
    EXPORT_DIR,
    RESULT_FILE,
    initial_model,
    measure_latency,
    retrain,
    retrain_identity,
    run_fingerprint,
)
from metaprune.retrain.source import resolve_config, retrain_label

__all__ = [
    "EXPORT_DIR",
    "INITS",
    "RESULT_FILE",
    "KDConfig",
    "RetrainConfig",
    "initial_model",
    "kd_loss",
    "kd_step",
    "load_teacher",
    "measure_latency",
    "recipe",
    "resolve_config",
    "retrain",
    "retrain_identity",
    "retrain_label",
    "run_fingerprint",
]
