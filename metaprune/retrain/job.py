"""The retrain job: train a pruned network from scratch, test, measure, export, report.

MetaPruning (Liu et al., ICCV 2019, sec. 3.3-4) builds the winner of the search as an ordinary
network and trains it from scratch.  :func:`retrain` does that for the config named by the
``retrain`` group (:mod:`.source`) with the same :class:`~metaprune.engine.Trainer` as PruningNet
training (schedule, AMP, DDP, checkpoints, resume, TensorBoard): the groups ``train``, ``optim``,
``sched`` are shared, and ``retrain.epochs`` / ``retrain.train`` / ``retrain.optim`` /
``retrain.sched`` override them.  After training the network is scored once on the official test
split (never used for any choice: the per-epoch validation runs on the ``search`` split), its
FLOPs, parameters and measured latency go to ``result.json`` and TensorBoard, and it is exported
to ``export/`` (:mod:`metaprune.export`).

Beyond the paper: ``init=inherit`` (the PruningNet's generated weights, then fine-tuning) and
distillation (:mod:`.distill`); a finished run directory called again returns its
``result.json`` without training, an interrupted one continues with ``train.resume=true``.  Both
only when the stage's identity (:func:`retrain_identity`: data, space, channel config, recipe,
distillation, initialisation) equals the one stored in ``result.json`` and in every checkpoint;
otherwise :class:`~metaprune.engine.identity.StaleStageError` names the keys that differ.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from metaprune.config import build_space, to_plain
from metaprune.cost import count_flops, count_params
from metaprune.cost.latency import make_runner, time_runners, torch_threads
from metaprune.data import build_datasets, make_loader
from metaprune.data.identity import data_identity
from metaprune.engine import (
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    Trainer,
    evaluate,
    seed_everything,
    supervised_step,
)
from metaprune.engine.checkpoint import finished_result
from metaprune.engine.identity import file_hash
from metaprune.engine.trainer import train_loader
from metaprune.export import ExportMismatchError, check_exports, export_model, pruned_path
from metaprune.io import CheckpointError, atomic_write_json, read_json
from metaprune.models import build_pruned
from metaprune.pruningnet import load_pruningnet
from metaprune.pruningnet.checkpoint import pruningnet_file
from metaprune.retrain.config import RetrainConfig, recipe
from metaprune.retrain.distill import kd_step, load_teacher
from metaprune.retrain.source import resolve_config
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
EXPORT_DIR = "export"


def initial_model(cfg: RetrainConfig, space: ChannelSpace, config: ChannelConfig) -> nn.Module:
    """``build_pruned(space, config)``, randomly initialised (``scratch``) or with the weights
    the PruningNet ``cfg.pruningnet`` generates for ``config`` (``inherit``)."""
    model = build_pruned(space, config)
    if cfg.init == "inherit":
        pnet = load_pruningnet(cfg.pruningnet, space=space)
        model.load_state_dict(pnet.generate(config), strict=True)
    return model


def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], repeats: int = 30, threads: int = 1
) -> float:
    """Median milliseconds of one forward pass of ``model`` at batch 1 on the CPU (eager,
    inference mode, ``threads`` threads; warm-up, then 5 rounds of one untimed and ``repeats``
    timed calls: one network needs no interleaving)."""
    cpu = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    with torch_threads(threads):
        run = make_runner(cpu, torch.randn(1, *input_shape), device="cpu")
        return float(time_runners([run], device="cpu", repeats=repeats, rounds=5)[0])


def run_fingerprint(space: ChannelSpace, config: ChannelConfig, rcfg: RetrainConfig) -> str:
    """Identity of a retrain run: the space, the config's widths, the init and the teacher."""
    widths = hashlib.sha256(json.dumps(config.width_tuple()).encode()).hexdigest()[:12]
    kd = f":kd-T{rcfg.kd.temperature:g}-w{rcfg.kd.weight:g}" if rcfg.kd.teacher else ""
    return f"retrain:{space.fingerprint}:{widths}:{rcfg.init}{kd}"


def retrain_identity(
    data: Any,
    space: ChannelSpace,
    config: ChannelConfig,
    rcfg: RetrainConfig,
    tcfg: TrainConfig,
    optim: OptimConfig,
    sched: SchedConfig,
) -> dict[str, Any]:
    """What a retrain's result depends on (:mod:`metaprune.engine.identity`), keyed like the
    config groups: the ``data`` group, the space (``model``) and the channel ``config``; the
    recipe as trained, i.e. ``train`` / ``optim`` / ``sched`` with the ``retrain`` overrides and
    ``retrain.epochs`` applied (without the options that only change how a run executes or that
    only PruningNet training reads), and the distillation settings with the teacher file's
    content hash (``kd``, null without a teacher); the initialisation, with the PruningNet
    file's content hash for ``inherit``."""
    pnet = None
    if rcfg.init == "inherit":
        pnet = _content_hash(pruningnet_file(rcfg.pruningnet), "pruningnet")
    kd = None
    if rcfg.kd.teacher:
        teacher = _content_hash(pruned_path(rcfg.kd.teacher), "kd.teacher")
        kd = {"teacher": teacher, "temperature": rcfg.kd.temperature, "weight": rcfg.kd.weight}
    return {
        "data": data_identity(data),
        "model": space.describe(),
        "config": config.to_dict(),
        "train": tcfg.identity(pruningnet=False),
        "optim": asdict(optim),
        "sched": asdict(sched),
        "kd": kd,
        "init": {"kind": rcfg.init, "pruningnet": pnet},
    }


def _content_hash(path: Path, option: str) -> str:
    if not path.is_file():
        raise CheckpointError(f"retrain.{option}: {path} does not exist")
    return file_hash(path)


def retrain(
    cfg: Any,
    out_dir: str | os.PathLike,
    config: ChannelConfig | None = None,
    start: tuple[nn.Module, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Retrain a pruned network of ``cfg`` (groups model, space, data, optim, sched, train,
    retrain) into ``out_dir``; returns the result also written to ``result.json``.

    ``config`` overrides the config named by ``cfg.retrain`` (see :func:`resolve_config`).
    ``start`` is ``(network of config's widths, what its weights come from)``: training
    fine-tunes that network instead of :func:`initial_model`'s, and the identity's ``init`` is
    the description given (``metaprune prune`` passes the pruned network).  The
    run directory holds ``checkpoint.pt`` (resume state), ``result.json``, ``tb/`` and
    ``export/`` (``pruned.pt``, ``model.json`` and the exported programs).
    """
    out_dir = Path(out_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    rcfg = RetrainConfig.from_any(cfg.get("retrain"))
    tcfg, ocfg, scfg = recipe(cfg, rcfg)
    rt = Runtime.setup(tcfg.device, tcfg.amp, tcfg.channels_last)
    data = build_datasets(cfg.data)
    space = build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)
    if config is None:
        config = resolve_config(rcfg, space)
    else:
        space.check(config)
    fingerprint = run_fingerprint(space, config, rcfg)
    identity = retrain_identity(cfg.data, space, config, rcfg, tcfg, ocfg, scfg)
    if start is not None:
        identity["init"] = start[1]
    done = finished_result(out_dir / RESULT_FILE, fingerprint, identity)
    if done is not None:
        log.info("%s already holds a finished retrain run; skipping", out_dir)
        return done

    seed_everything(tcfg.seed)
    model = initial_model(rcfg, space, config) if start is None else start[0]
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
        identity=identity,
        meta={"space": space.describe(), "config": config.to_dict(), "run": to_plain(cfg)},
        runtime=rt,
    )
    fit = trainer.fit()
    if rt.is_main:
        _report(trainer, fit, data, space, config, rcfg, identity, fingerprint, out_dir)
    rt.barrier()
    return read_json(out_dir / RESULT_FILE)


def _report(
    trainer: Trainer,
    fit: dict[str, Any],
    data: Any,
    space: ChannelSpace,
    config: ChannelConfig,
    rcfg: RetrainConfig,
    identity: dict[str, Any],
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
        "identity": identity,
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
