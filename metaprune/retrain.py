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
one continues with ``train.resume=true``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from metaprune.config import build_space, to_dataclass, to_plain
from metaprune.cost import count_flops, count_params
from metaprune.cost.latency import make_runner, time_runners
from metaprune.data import build_datasets, make_loader
from metaprune.engine import (
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    Trainer,
    evaluate,
    require_fingerprint,
    seed_everything,
    supervised_step,
)
from metaprune.engine.trainer import LossFn, StepFn, train_loader
from metaprune.export import (
    FORMATS,
    ExportMismatchError,
    check_exports,
    export_model,
    load_pruned,
)
from metaprune.io import atomic_write_json
from metaprune.models import build_pruned
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
EXPORT_DIR = "export"
INITS = ("scratch", "inherit")


@dataclass
class KDConfig:
    """Knowledge distillation (config group ``retrain.kd``)."""

    teacher: str | None = None
    """A pruned network saved by ``export_model``/``retrain`` (``pruned.pt`` or its export
    directory), loaded with ``load_pruned``; null = no distillation."""
    temperature: float = 4.0
    """Softmax temperature T of teacher and student (the KL term is scaled by T^2)."""
    weight: float = 0.9
    """Weight w of the KL term; the cross-entropy with the labels gets 1 - w."""


@dataclass
class RetrainConfig:
    """The ``retrain`` config group: which config to retrain, how, and what to report."""

    from_search: str | None = None
    """A finished search run directory whose winner to retrain (with ``target``)."""
    target: Any = None
    """Which winner of ``from_search``: a target as written in ``search.targets`` (e.g. 0.5,
    '300M'); one that is not a search target is answered from the search's scored table as the
    best config under that bound on ``search.cost``.  Null = the search's only winner."""
    config: str | None = None
    """A JSON file with a ChannelConfig (``to_json()``, a ``winners.json`` entry or a
    ``model.json``)."""
    uniform: float | None = None
    """Retrain the uniform-width baseline at this ratio (the nearest choice of the space)."""
    init: str = "scratch"
    """``scratch`` (the paper: random initialisation) or ``inherit`` (the PruningNet's generated
    weights for the config, then fine-tuning)."""
    pruningnet: str | None = None
    """PruningNet checkpoint or training run directory; needed for ``init=inherit``."""
    kd: KDConfig = field(default_factory=KDConfig)
    """Knowledge distillation from a teacher network."""
    epochs: int | None = None
    """Retraining epochs; null = ``train.epochs`` (or ``retrain.train.epochs``)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``train`` group for retraining (e.g. ``{batch_size: 256}``)."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``optim`` group for retraining (e.g. ``{lr: 0.05}``)."""
    sched: dict[str, Any] = field(default_factory=dict)
    """Overrides of the ``sched`` group for retraining."""
    export: bool = True
    """Export the retrained network to ``export/`` (``pruned.pt`` and ``model.json`` are always
    written there)."""
    export_formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Programs to export: ``torchscript``, ``export`` (``torch.export``), ``onnx``."""
    onnx_exporter: str = "torchscript"
    """``torchscript`` (fast) or ``dynamo`` (``torch.export``-based) ONNX exporter."""
    latency_repeats: int = 30
    """Timed calls per round when measuring latency (5 rounds, median); 0 = do not measure."""
    latency_threads: int = 1
    """CPU threads while measuring latency."""

    def validate(self) -> RetrainConfig:
        """Check value ranges; raises ``ValueError`` naming the bad field."""
        if self.init not in INITS:
            raise ValueError(f"retrain.init={self.init!r}; choose one of {list(INITS)}")
        if self.init == "inherit" and not self.pruningnet:
            raise ValueError("retrain.init=inherit needs retrain.pruningnet (a PruningNet path)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"retrain.epochs must be >= 1, got {self.epochs}")
        if not self.kd.temperature > 0 or not 0.0 <= self.kd.weight <= 1.0:
            raise ValueError(
                f"retrain.kd needs temperature > 0 and weight in [0, 1], got "
                f"{self.kd.temperature}, {self.kd.weight}"
            )
        bad = sorted(set(self.export_formats) - set(FORMATS))
        if bad:
            raise ValueError(f"retrain.export_formats {bad} unknown; choose from {list(FORMATS)}")
        if self.latency_repeats < 0 or self.latency_threads < 1:
            raise ValueError("retrain.latency_repeats must be >= 0 and latency_threads >= 1")
        return self

    @classmethod
    def from_any(cls, group: Any) -> RetrainConfig:
        """A validated config from itself, a mapping or an OmegaConf node (unknown keys fail)."""
        if isinstance(group, cls):
            return group.validate()
        merged = OmegaConf.merge(OmegaConf.structured(cls), to_plain(group))
        out = OmegaConf.to_object(merged)
        assert isinstance(out, cls)
        return out.validate()


# -- which config -------------------------------------------------------------------------------
def _source(cfg: RetrainConfig) -> str:
    """Which of ``config``, ``from_search``, ``uniform`` names the config (exactly one)."""
    sources = [n for n in ("config", "from_search", "uniform") if getattr(cfg, n) is not None]
    if not sources:
        raise ValueError(
            "retrain needs a channel config: set one of retrain.config (a JSON file), "
            "retrain.from_search (a search run, with retrain.target) or retrain.uniform (a ratio)"
        )
    if len(sources) > 1:
        raise ValueError(
            f"retrain got several channel configs ({', '.join('retrain.' + s for s in sources)});"
            " set exactly one"
        )
    if cfg.target is not None and sources[0] != "from_search":
        raise ValueError("retrain.target selects a winner of retrain.from_search, which is unset")
    return sources[0]


def _config_from_file(path: str | os.PathLike, space: ChannelSpace) -> ChannelConfig:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"retrain.config: {p} does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"retrain.config: {p} is not valid JSON: {e}") from e
    if isinstance(data, dict) and "genes" not in data and isinstance(data.get("config"), dict):
        data = data["config"]  # a winners.json entry or an export's model.json
    if not isinstance(data, dict):
        raise ValueError(f"retrain.config: {p} holds no channel config (a JSON object)")
    try:
        return space.from_json(data)
    except ValueError as e:
        raise ValueError(f"retrain.config: {p}: {e}") from e


def _config_from_search(run_dir: str, target: Any, space: ChannelSpace) -> ChannelConfig:
    from metaprune.search import load_search

    run = load_search(run_dir)
    found = run.meta["space"]["fingerprint"]
    if found != space.fingerprint:
        raise ValueError(
            f"retrain.from_search: {run_dir} searched space {found} "
            f"({run.meta['space']['family']}), not this {space.family} space {space.fingerprint}"
        )
    winners = run.winners
    targets = [w["target"] for w in winners]
    if target is None:
        if len(winners) != 1:
            raise ValueError(
                f"retrain.from_search: {run_dir} has {len(winners)} winners (targets {targets}); "
                "choose one with retrain.target"
            )
        row = winners[0]["best"]
    else:
        match = [w for w in winners if w["target"] == target]
        row = match[0]["best"] if match else run.best(**{run.cost: target})
    if row is None:
        raise ValueError(
            f"retrain.from_search: no scored config of {run_dir} meets target {target!r} on "
            f"{run.cost} (the search's targets: {targets})"
        )
    return run.config(row)


def resolve_config(cfg: RetrainConfig, space: ChannelSpace) -> ChannelConfig:
    """The config to retrain, from exactly one of ``cfg.config``, ``cfg.from_search`` (with
    ``cfg.target``) or ``cfg.uniform``; none, several, or a config of another space raise
    ``ValueError`` naming the problem."""
    source = _source(cfg)
    if source == "config":
        return _config_from_file(cfg.config, space)
    if source == "from_search":
        return _config_from_search(cfg.from_search, cfg.target, space)
    return space.uniform(float(cfg.uniform), nearest=True)


def _slug(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def retrain_label(cfg: Any) -> str:
    """A directory name for the retrain of ``cfg`` (whole config or its ``retrain`` group):
    ``uniform0.5``, ``target0.5``, ``winner``, ``config-<file stem>``, plus ``-inherit`` /
    ``-kd`` when used."""
    group = cfg.get("retrain") if isinstance(cfg, DictConfig | dict) and "retrain" in cfg else cfg
    rcfg = RetrainConfig.from_any(group)
    source = _source(rcfg)
    if source == "uniform":
        label = f"uniform{float(rcfg.uniform):g}"
    elif source == "from_search":
        label = "winner" if rcfg.target is None else f"target{_slug(rcfg.target)}"
    else:
        label = f"config-{_slug(Path(rcfg.config).stem)}"
    if rcfg.init == "inherit":
        label += "-inherit"
    if rcfg.kd.teacher:
        label += "-kd"
    return label


# -- model and loss ------------------------------------------------------------------------------
def initial_model(cfg: RetrainConfig, space: ChannelSpace, config: ChannelConfig) -> nn.Module:
    """``build_pruned(space, config)``, randomly initialised (``scratch``) or with the weights
    the PruningNet ``cfg.pruningnet`` generates for ``config`` (``inherit``)."""
    model = build_pruned(space, config)
    if cfg.init == "inherit":
        from metaprune.train import load_pruningnet

        pnet = load_pruningnet(cfg.pruningnet, space=space)
        model.load_state_dict(pnet.generate(config), strict=True)
    return model


def load_teacher(path: str | os.PathLike, space: ChannelSpace) -> nn.Module:
    """The KD teacher (see :class:`KDConfig`), checked to take this space's inputs and classes."""
    teacher = load_pruned(path)
    x = torch.zeros(1, *space.input_shape)
    try:
        with torch.no_grad():
            out = teacher(x)
    except RuntimeError as e:
        raise ValueError(
            f"retrain.kd.teacher {path} does not accept inputs of shape {space.input_shape}: {e}"
        ) from e
    if out.shape[1] != space.num_classes:
        raise ValueError(
            f"retrain.kd.teacher {path} has {out.shape[1]} classes, the data {space.num_classes}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """``(1 - weight) * loss_fn(student, y) + weight * T^2 * KL(teacher_T || student_T)``
    (Hinton et al., 2015), the KL term in float32 and averaged over the batch."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student.float() / t, dim=1),
        F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - weight) * loss_fn(student, y) + weight * t * t * kl


def kd_step(teacher: nn.Module, temperature: float, weight: float) -> StepFn:
    """The training step with distillation from ``teacher`` (kept in eval mode, no gradients)."""

    def step(model, x, y, rng, loss_fn):
        logits = model(x)
        with torch.no_grad():
            target = teacher(x)
        return kd_loss(logits, target, y, loss_fn, temperature, weight)

    return step


# -- measuring -----------------------------------------------------------------------------------
def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], repeats: int = 30, threads: int = 1
) -> float:
    """Median milliseconds of one forward pass of ``model`` at batch 1 on the CPU (eager,
    inference mode, ``threads`` threads; warm-up, then 5 rounds of one untimed and ``repeats``
    timed calls: one network needs no interleaving)."""
    cpu = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = make_runner(cpu, torch.randn(1, *input_shape), device="cpu")
        return float(time_runners([run], device="cpu", repeats=repeats, rounds=5)[0])
    finally:
        torch.set_num_threads(old)


# -- the job -------------------------------------------------------------------------------------
def _engine_configs(
    cfg: DictConfig, rcfg: RetrainConfig
) -> tuple[TrainConfig, OptimConfig, SchedConfig]:
    def merged(name: str) -> dict[str, Any]:
        return {**to_plain(cfg.get(name)), **getattr(rcfg, name)}

    tcfg = to_dataclass(TrainConfig, merged("train"))
    if rcfg.epochs is not None:
        tcfg.epochs = rcfg.epochs
    return (
        tcfg,
        to_dataclass(OptimConfig, merged("optim")),
        to_dataclass(SchedConfig, merged("sched")),
    )


def run_fingerprint(space: ChannelSpace, config: ChannelConfig, rcfg: RetrainConfig) -> str:
    """Identity of a retrain run: the space, the config's widths, the init and the teacher."""
    widths = hashlib.sha256(json.dumps(config.width_tuple()).encode()).hexdigest()[:12]
    kd = f":kd-T{rcfg.kd.temperature:g}-w{rcfg.kd.weight:g}" if rcfg.kd.teacher else ""
    return f"retrain:{space.fingerprint}:{widths}:{rcfg.init}{kd}"


def _finished(out_dir: Path, fingerprint: str, epochs: int) -> dict[str, Any] | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    require_fingerprint(path, result.get("fingerprint"), fingerprint)
    return result if result.get("epochs", 0) >= epochs else None


def retrain(
    cfg: Any, out_dir: str | os.PathLike, config: ChannelConfig | None = None
) -> dict[str, Any]:
    """Retrain a pruned network of ``cfg`` (groups model, space, data, optim, sched, train,
    retrain) into ``out_dir``; returns the result also written to ``result.json``.

    ``config`` overrides the config named by ``cfg.retrain`` (see :func:`resolve_config`).  The
    run directory holds ``checkpoint.pt`` (resume state), ``result.json``, ``tb/`` and
    ``export/`` (``pruned.pt``, ``model.json`` and the exported programs).
    """
    out_dir = Path(out_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    rcfg = RetrainConfig.from_any(cfg.get("retrain"))
    tcfg, ocfg, scfg = _engine_configs(cfg, rcfg)
    rt = Runtime.setup(tcfg.device, tcfg.amp, tcfg.channels_last)
    data = build_datasets(cfg.data)
    space = build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)
    if config is None:
        config = resolve_config(rcfg, space)
    else:
        space.check(config)
    fingerprint = run_fingerprint(space, config, rcfg)
    done = _finished(out_dir, fingerprint, tcfg.epochs)
    if done is not None:
        log.info("%s already holds a finished retrain run; skipping", out_dir)
        return done

    seed_everything(tcfg.seed)
    model = initial_model(rcfg, space, config)
    step_fn = supervised_step
    if rcfg.kd.teacher:
        teacher = load_teacher(rcfg.kd.teacher, space).to(rt.device)
        step_fn = kd_step(teacher, rcfg.kd.temperature, rcfg.kd.weight)
    loader = train_loader(data.train, tcfg, rt)
    val_loader = make_loader(data.search, tcfg.eval_batch_size, train=False, device=rt.device)

    def validate(net: nn.Module) -> dict[str, float]:
        return {"acc": evaluate(net, itertools.islice(val_loader, tcfg.val_batches))[0]}

    trainer = Trainer(
        model,
        loader,
        out_dir,
        train=tcfg,
        optim=ocfg,
        sched=scfg,
        step_fn=step_fn,
        validate_fn=validate if len(data.search) else None,
        fingerprint=fingerprint,
        meta={"space": space.describe(), "config": config.to_dict(), "run": to_plain(cfg)},
        runtime=rt,
    )
    fit = trainer.fit()
    if rt.is_main:
        _report(trainer, fit, data, space, config, rcfg, fingerprint, out_dir)
    rt.barrier()
    return json.loads((out_dir / RESULT_FILE).read_text())


def _report(
    trainer: Trainer,
    fit: dict[str, Any],
    data: Any,
    space: ChannelSpace,
    config: ChannelConfig,
    rcfg: RetrainConfig,
    fingerprint: str,
    out_dir: Path,
) -> None:
    """Test accuracy, costs, latency, export; ``result.json`` and TensorBoard."""
    model = trainer.module
    test_loader = make_loader(
        data.test, trainer.cfg.eval_batch_size, train=False, device=trainer.runtime.device
    )
    test_acc, test_n = evaluate(model, test_loader)
    flops, params = count_flops(space, config), count_params(space, config)
    latency = (
        measure_latency(model, space.input_shape, rcfg.latency_repeats, rcfg.latency_threads)
        if rcfg.latency_repeats
        else None
    )
    result: dict[str, Any] = {
        "fingerprint": fingerprint,
        "space": space.describe(),
        "config": config.to_dict(),
        "widths": list(config.width_tuple()),
        "flops": flops,
        "params": params,
        "flops_ratio": flops / count_flops(space, space.max()),
        "params_ratio": params / count_params(space, space.max()),
        "latency_ms": latency,
        "latency": {"batch": 1, "device": "cpu", "threads": rcfg.latency_threads},
        "test_accuracy": test_acc,
        "test_samples": test_n,
        "retrain": asdict(rcfg),
        **fit,
    }
    meta = {
        "test_accuracy": test_acc,
        "latency_ms": latency,
        "normalization": {"mean": list(data.test.mean), "std": list(data.test.std)},
        "classes": list(data.classes),
    }
    formats = rcfg.export_formats if rcfg.export else []
    paths = export_model(
        model,
        space,
        config,
        out_dir / EXPORT_DIR,
        formats=formats,
        onnx_exporter=rcfg.onnx_exporter,
        meta=meta,
    )
    check_input = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(0))
    result["export"] = {"dir": EXPORT_DIR, "files": {k: p.name for k, p in paths.items()}}
    try:
        result["export"]["max_abs_diff"] = check_exports(paths, model, check_input)
    except ExportMismatchError as e:  # keep the trained network and its report; flag the export
        log.error("exported program differs from the trained network: %s", e)
        result["export"]["error"] = str(e)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out_dir / "tb")) as writer:
        scalars = {"test/accuracy": test_acc, "cost/flops": flops, "cost/params": params}
        if latency is not None:
            scalars["cost/latency_ms"] = latency
        for k, v in scalars.items():
            if math.isfinite(v):
                writer.add_scalar(k, v, trainer.step)
    atomic_write_json(out_dir / RESULT_FILE, result)
    log.info(
        "retrained %s: test accuracy %.4f, %d FLOPs, %d params, %s ms",
        config,
        test_acc,
        flops,
        params,
        latency,
    )


__all__ = [
    "KDConfig",
    "RetrainConfig",
    "initial_model",
    "kd_loss",
    "kd_step",
    "load_teacher",
    "measure_latency",
    "resolve_config",
    "retrain",
    "retrain_label",
    "run_fingerprint",
]
