"""The prune job: score a trained network's channels, keep the best, fine-tune, report, export.

The pruning pipeline of the criteria's papers (prune a trained network, then fine-tune; Li et
al., ICLR 2017, sec. 3; Liu et al., ICCV 2017, sec. 3.3): :func:`prune` loads the full-width
network (``prune.from``, :mod:`.source`), lets the criterion score every channel on training
batches (:mod:`.criteria`), keeps the top channels at ``prune.widths`` or allocates widths
globally to ``prune.target`` (:mod:`.allocate`), builds the pruned network with
``build_pruned`` and the kept weights (:mod:`.channels`, or the criterion's own transfer),
optionally recomputes its BN statistics on ``prune.recalib_batches`` clean training batches
(beyond the papers: the kept channels' statistics change once others are gone), and fine-tunes it with the retrain engine (:func:`~metaprune.retrain.retrain`: the ``retrain``
group's recipe, ``retrain.kd`` distillation, here from the unpruned network with ``prune.kd``).
With ``space.depth=true`` the criterion scores the network's width genes (the space without its
depth genes, :attr:`~metaprune.space.ChannelSpace.width_space`), the removable blocks it finds
dead (:meth:`~metaprune.prune.Criterion.dead_blocks`, SSS's zero block factors) are switched off
before the widths are chosen, and the pruned network is built without them.

The run directory holds ``start.pt`` (the pruned network before fine-tuning, with what it was
made from), ``prune.json`` (the criterion, the widths, kept channels and scores, the cost ratios,
and ``search_accuracy``: the pruned network's accuracy on the search split before fine-tuning), ``unpruned.pt``
(the teacher, with ``prune.kd``) and everything ``retrain`` writes (``result.json``, ``export/``,
checkpoints, ``tb/``).  ``start.pt`` is reused when its inputs are this run's, so a resumed
fine-tune does not score again; the fine-tune's identity is the retrain identity with ``init``
the prune's inputs.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metaprune.config import build_space
from metaprune.cost import count_flops, count_params
from metaprune.data import build_datasets, make_loader, recalibration_batches
from metaprune.data.identity import data_identity
from metaprune.engine import Runtime, evaluate, recalibrate_bn, seed_everything
from metaprune.engine.identity import file_hash
from metaprune.export import pruned_payload
from metaprune.groups import to_plain
from metaprune.io import atomic_torch_save, atomic_write_json, safe_torch_load
from metaprune.models import build_pruned
from metaprune.prune import criteria  # noqa: F401  (registration)
from metaprune.prune.allocate import allocate, cost_function, keep_for
from metaprune.prune.channels import drop_removed
from metaprune.prune.config import PruneConfig
from metaprune.prune.criterion import Batches, make_criterion
from metaprune.prune.source import PruneInputError, load_source
from metaprune.retrain import RetrainConfig, recipe, resolve_config, retrain
from metaprune.space import ChannelConfig, ChannelSpace

log = logging.getLogger(__name__)

START_FILE = "start.pt"
SUMMARY_FILE = "prune.json"
TEACHER_FILE = "unpruned.pt"


def stream(dataset: Any, batch_size: int, seed: int, device: torch.device) -> Batches:
    """Training batches of ``dataset`` without end, shuffled and augmented from ``seed``."""
    loader = make_loader(dataset, batch_size, train=True, device=device, seed=seed)

    def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count():
            loader.set_epoch(epoch)
            yield from loader

    return gen()


def fixed_widths(pcfg: PruneConfig, space: ChannelSpace) -> ChannelConfig:
    """The config of ``prune.widths``: a uniform ratio (nearest choice) or a config file."""
    w = pcfg.widths
    if isinstance(w, int | float) and not isinstance(w, bool):
        return space.uniform(float(w), nearest=True)
    try:
        return resolve_config(RetrainConfig(config=str(w)), space)
    except ValueError as e:
        raise PruneInputError(f"prune.widths: {e}") from e


def target_cost(pcfg: PruneConfig, space: ChannelSpace) -> tuple[Callable, float]:
    """The cost ``prune.cost`` of a config, and the absolute value ``prune.target`` allows."""
    from metaprune.search.constraints import parse_value

    price = cost_function(space, pcfg.cost, pcfg.latency_table)
    full = price(space.max())
    return price, float(parse_value(pcfg.cost, pcfg.target, full, "prune.target"))


def prune_identity(cfg: DictConfig, pcfg: PruneConfig, source: Path) -> dict[str, Any]:
    """What the pruned network before fine-tuning depends on: the source file's content, the
    criterion and its options, the size (target or widths), the batches it scored on; with
    ``space.depth`` on, that too (left out when off: identities made before it stay valid)."""
    widths = pcfg.widths
    if widths is not None and not isinstance(widths, int | float):
        widths = {"file": file_hash(widths)}
    depth = {"depth": True} if to_plain(cfg.get("space")).get("depth") else {}
    return {
        **depth,
        "kind": "prune",
        "from": file_hash(source),
        "criterion": pcfg.criterion,
        "options": dict(pcfg.options),
        "target": pcfg.target,
        "cost": pcfg.cost,
        "latency_table": file_hash(pcfg.latency_table) if pcfg.latency_table else None,
        "widths": widths,
        "batch_size": pcfg.batch_size,
        "recalib_batches": pcfg.recalib_batches,
        "seed": pcfg.seed,
        "data": data_identity(cfg.data),
    }


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def prune_network(
    model: torch.nn.Module,
    space: ChannelSpace,
    pcfg: PruneConfig,
    batches: Batches,
) -> tuple[ChannelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Score ``model`` (a full-width network, changed in place by criteria that train), choose
    the widths (and, on a space with depth genes, the blocks removed: module docstring) and the
    kept channels: ``(config, pruned state dict, summary)``."""
    criterion = make_criterion(pcfg.criterion, pcfg.options)
    scores = criterion.score(model, space.width_space, batches)
    dead = criterion.dead_blocks()
    start = space.remove_blocks(
        space.max(), [d for d, i in space.depth_blocks.items() if i in dead]
    )
    if pcfg.target is not None:
        price, budget = target_cost(pcfg, space)
        config = allocate(space, scores, budget, price, criterion.normalise, start=start)
    else:
        config = space.remove_blocks(fixed_widths(pcfg, space), list(space.removed(start)))
    keep = keep_for(space, scores, config)
    state = criterion.transfer(model, space.width_space, keep, batches)
    state = drop_removed(space, config, state)
    full, widths = space.max(), config.widths()
    summary = {
        "criterion": pcfg.criterion,
        "options": dict(pcfg.options),
        "normalise": criterion.normalise,
        "config": config.to_dict(),
        "widths": list(config.width_tuple()),
        "flops_ratio": count_flops(space, config) / count_flops(space, full),
        "params_ratio": count_params(space, config) / count_params(space, full),
        "kept": {g: k.tolist() if widths[g] else [] for g, k in keep.items()},  # [] in removed
        "scores": {g: s.tolist() for g, s in scores.items()},
    }
    if space.depth_blocks:  # the depth genes switched off
        summary["removed_blocks"] = list(space.removed(config))
    return config, state, summary


def prune_label(cfg: Any) -> str:
    """A directory name for the prune of ``cfg``: ``<criterion>-<cost><target>``,
    ``<criterion>-widths<ratio>`` or ``<criterion>-config-<file stem>``, plus ``-depth`` (with
    ``space.depth`` on) and ``-kd``."""
    pcfg = PruneConfig.from_any(cfg.get("prune")).require_size()
    if pcfg.target is not None:
        size = f"{pcfg.cost}{pcfg.target}"
    elif isinstance(pcfg.widths, int | float):
        size = f"widths{float(pcfg.widths):g}"
    else:
        size = f"config-{Path(str(pcfg.widths)).stem}"
    label = re.sub(r"[^A-Za-z0-9.%]+", "-", f"{pcfg.criterion}-{size}").strip("-")
    depth = "-depth" if to_plain(cfg.get("space")).get("depth") else ""
    return label + depth + ("-kd" if pcfg.kd else "")


def prune(cfg: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Prune the network ``cfg.prune`` names and fine-tune it into ``out_dir`` (module
    docstring); returns the fine-tune's ``result.json`` with the prune summary under
    ``prune``."""
    out_dir = Path(out_dir)
    cfg = copy.deepcopy(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
    pcfg = PruneConfig.from_any(cfg.get("prune")).require_size()
    rcfg = RetrainConfig.from_any(cfg.get("retrain"))
    if rcfg.init != "scratch":
        raise PruneInputError("prune fine-tunes the pruned weights: leave retrain.init=scratch")
    tcfg = recipe(cfg, rcfg)[0]
    rt = Runtime.setup(tcfg.device, tcfg.amp, tcfg.channels_last)
    data = build_datasets(cfg.data)
    space = build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)
    source, source_path = load_source(pcfg.source, space)
    identity = prune_identity(cfg, pcfg, source_path)
    start_path = out_dir / START_FILE
    stored = safe_torch_load(start_path) if start_path.is_file() else None
    fresh = stored is None or not _same(stored["identity"], identity)
    teacher = out_dir / TEACHER_FILE
    if rt.is_main and fresh:
        seed_everything(pcfg.seed)
        batches = stream(data.train, pcfg.batch_size, pcfg.seed, rt.device)
        work = copy.deepcopy(source).to(rt.device)
        config, state, summary = prune_network(work, space, pcfg, batches)
        pruned = build_pruned(space, config, rt.device)
        pruned.load_state_dict(state, strict=True)
        if pcfg.recalib_batches:  # BN statistics of the pruned network's own activations
            n, size = pcfg.recalib_batches, pcfg.batch_size
            feed = recalibration_batches(
                data.train, n, size, augment=False, seed=pcfg.seed, device=rt.device
            )
            recalibrate_bn(pruned, feed)
            state = pruned.state_dict()
        if len(data.search):  # how much the pruning alone costs, before any fine-tuning
            loader = make_loader(data.search, tcfg.eval_batch_size, train=False, device=rt.device)
            summary["search_accuracy"] = evaluate(pruned, loader)[0]
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"identity": identity, "config": config.to_dict(), "summary": summary}
        payload["state_dict"] = {k: v.detach().cpu() for k, v in state.items()}
        atomic_torch_save(start_path, payload)
        atomic_write_json(out_dir / SUMMARY_FILE, summary)
        log.info("pruned by %s to %s", pcfg.criterion, config)
    use_teacher = pcfg.kd and not rcfg.kd.teacher
    if rt.is_main and use_teacher and (fresh or not teacher.is_file()):
        atomic_torch_save(teacher, pruned_payload(source, space, space.max()))
    rt.barrier()
    stored = safe_torch_load(start_path)
    config = space.from_json(stored["config"])
    model = build_pruned(space, config)
    model.load_state_dict(stored["state_dict"], strict=True)
    if use_teacher:
        cfg.retrain.kd.teacher = str(teacher)
    result = retrain(cfg, out_dir, config, start=(model, identity))
    return {**result, "prune": stored["summary"]}
