"""A generic training loop shared by PruningNet training and retraining.

The model-specific part of a step is a callable ``step_fn(model, x, y, rng, loss_fn) -> loss``:
for the PruningNet it samples channel configurations (stochastic structure sampling, MetaPruning,
Liu et al., ICCV 2019, sec. 3.2) and averages their losses; for retraining it is plain
cross-entropy (:func:`supervised_step`).  ``rng`` is a NumPy generator seeded by
``(train.seed, global step)``, identical on every DDP rank and after a resume, so the sampled
structures do not depend on how a run was interrupted.

Around it the :class:`Trainer` provides what users of this field expect: SGD with parameter groups
(no weight decay on BN and biases), per-step warm-up + cosine/linear schedule, label smoothing,
bf16 autocast and channels_last on CUDA, optional ``torch.compile``, DDP under ``torchrun`` in the
same code path, gradient clipping, seeding, a progress bar, TensorBoard scalars and an atomic
checkpoint each epoch from which ``resume=True`` continues bit-for-bit (model, optimiser,
scheduler, grad scaler and RNG states).  Each checkpoint stores the run's identity (what its
result depends on, :mod:`metaprune.engine.identity`) and how its data is cut into steps (world
size, steps per epoch); a resume with another identity or cut is refused, so a run never
continues with the optimiser state or schedule of other hyper-parameters.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from metaprune.data import Loader, make_loader
from metaprune.engine.checkpoint import CheckpointStore
from metaprune.engine.identity import require_identity
from metaprune.engine.optim import OptimConfig, SchedConfig, build_optimizer, build_scheduler
from metaprune.engine.runtime import (
    AMP_WORDS,
    Runtime,
    get_rng_state,
    seed_everything,
    set_rng_state,
)
from metaprune.engine.switch import switch
from metaprune.io import CheckpointError

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, np.random.Generator, LossFn], torch.Tensor
]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class TrainConfig:
    """The ``train`` config group (also used, under ``retrain``, for retraining)."""

    epochs: int = 1
    """Number of passes over the training split."""
    batch_size: int = 128
    """Training batch size per process (DDP: per rank)."""
    eval_batch_size: int = 256
    """Batch size for validation and BN recalibration."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; null = off."""
    amp: str = "auto"
    """Mixed precision: ``auto`` (bf16 autocast on CUDA only), ``native`` (bf16 where the device
    computes it natively: CUDA, AVX-512 BF16 or AMX CPUs), ``bf16``, ``fp16`` (CUDA) or off."""
    channels_last: str = "auto"
    """Channels-last memory format: ``auto`` (on CUDA only), true or false."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""
    device: str = "auto"
    """``auto`` (``cuda:LOCAL_RANK`` if available, else cpu) or a torch device string."""
    seed: int = 0
    """Seed of Python, NumPy and torch RNGs, of the data order and of structure sampling."""
    deterministic: bool = False
    """Ask torch for deterministic kernels (slower on GPU)."""
    resume: bool = False
    """Continue the run found in the output directory (from its last complete epoch)."""
    log_every: int = 20
    """Log loss, lr and throughput to TensorBoard every this many steps."""
    progress: bool = True
    """Show a progress bar (only on rank 0 and when stderr is a terminal)."""
    max_steps_per_epoch: int | None = None
    """Cap on the steps of an epoch (for budgets and tests); null = the whole split."""
    sampling: str = "uniform"
    """PruningNet structure sampling: ``uniform`` per gene (paper) or ``flops_uniform``."""
    sandwich: bool = False
    """PruningNet: also train the max and min configurations every step."""
    recalib_batches: int = 10
    """Training batches used to recalibrate BN statistics before validating a configuration."""
    val_batches: int | None = None
    """Cap on the validation batches (of ``eval_batch_size``); null = the whole split."""
    recalib_augment: bool = True
    """PruningNet validation: recalibrate BN on augmented training batches (the paper's training
    batches) or, false, on clean ones (like ``search.scorer.recalib_augment``)."""
    distill: str = "none"
    """PruningNet: ``none`` (the paper: labels only) or ``fullnet``: the max-width network, run
    by the same PruningNet on the same batch, supervises the sampled networks
    (:mod:`metaprune.pruningnet.supervision`)."""
    distill_mode: str = "logits"
    """Full-net supervision: ``logits`` (in-place distillation) or ``stagewise``."""
    distill_weight: float = 0.5
    """Full-net supervision: share ``w`` of the full network's term in a sampled network's loss,
    ``(1 - w) * labels + w * match`` (match: KL of the soft targets, or the stages' MSE)."""
    distill_temperature: float = 1.0
    """In-place distillation: softmax temperature ``T`` (the KL term is scaled by ``T^2``)."""

    def validate(self) -> TrainConfig:
        """Check ranges and switches; raises ``ValueError`` naming the field."""
        counts = ("epochs", "batch_size", "eval_batch_size", "log_every", "recalib_batches")
        for name in (*counts, "max_steps_per_epoch", "val_batches"):  # the last two may be null
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name} must be >= 1, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
        switch(self.amp, "train.amp", AMP_WORDS)
        switch(self.channels_last, "train.channels_last")
        if self.distill not in DISTILL:
            raise ValueError(f"train.distill must be one of {list(DISTILL)}, got {self.distill!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"train.distill_weight must be in [0, 1], got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise ValueError(
                f"train.distill_temperature must be positive, got {self.distill_temperature}"
            )
        return self

    def identity(self, pruningnet: bool = True) -> dict[str, Any]:
        """The options that decide a run's result: all but :data:`EXECUTION_OPTIONS` (and,
        with ``pruningnet=False``, for a retrain, all but :data:`PRUNINGNET_OPTIONS`); the
        :data:`DISTILL_OPTIONS` only with ``distill`` on, so the identities of runs made before
        they existed still match."""
        left_out = EXECUTION_OPTIONS if pruningnet else (*EXECUTION_OPTIONS, *PRUNINGNET_OPTIONS)
        if self.distill == "none":
            left_out = (*left_out, *DISTILL_OPTIONS)
        return {k: v for k, v in asdict(self).items() if k not in left_out}


EXECUTION_OPTIONS = (
    "amp",
    "channels_last",
    "compile",
    "device",
    "deterministic",
    "resume",
    "log_every",
    "progress",
)
"""``train`` options that change how a run executes, not what it computes from: left out of a
stage's identity (mixed precision and kernel choice move results only by rounding)."""
DISTILL = ("none", "fullnet")
"""Values of ``train.distill``."""
DISTILL_OPTIONS = ("distill", "distill_mode", "distill_weight", "distill_temperature")
"""``train`` options of full-net supervision: in an identity only when ``distill`` is not
``none`` (added after trained PruningNets existed, whose identities lack them)."""
PRUNINGNET_OPTIONS = (
    "sampling",
    "sandwich",
    "recalib_batches",
    "recalib_augment",
    *DISTILL_OPTIONS,
)
"""``train`` options that only PruningNet training and its validation read: a retrain, which
shares the ``train`` group, leaves them out of its identity."""


def train_loader(dataset: Any, cfg: TrainConfig, rt: Runtime) -> Loader:
    """The training loader of a run: shuffled and augmented from ``cfg.seed``, this rank's shard,
    batches of ``cfg.batch_size`` on the run's device."""
    return make_loader(
        dataset,
        cfg.batch_size,
        train=True,
        device=rt.device,
        seed=cfg.seed,
        rank=rt.rank,
        world_size=rt.world_size,
        channels_last=rt.channels_last,
    )


def conv_weights_channels_last(model: nn.Module) -> nn.Module:
    """Store the weights of ``model``'s 2-d convs channels-last, and nothing else.

    ``Module.to(memory_format=...)`` converts every 4-d tensor, which in a PruningNet includes the
    meta blocks' ``(Cout, Cin, k*k, hidden)`` generator weights: their cropped slices would then be
    read with a scattered stride.  Activations are made channels-last by the loader and the step.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return model


def supervised_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, loss_fn: LossFn
) -> torch.Tensor:
    """The plain supervised step: ``loss_fn(model(x), y)``."""
    return loss_fn(model(x), y)


def _plain_json(obj: Any) -> Any:
    """``obj`` as plain JSON data (raises ``TypeError`` if it is not serialisable)."""
    return json.loads(json.dumps(obj))


class Trainer:
    """Trains ``model`` on ``loader`` with ``step_fn``; see the module docstring.

    ``loader`` yields ``(x, y)`` sharded for this rank (moved to the runtime's device if they are
    not there); if it has ``set_epoch`` it is called each epoch.  ``validate_fn`` is called on
    rank 0 after every epoch with the unwrapped model and returns scalars for the log.
    ``out_dir`` receives the checkpoints and TensorBoard scalars; ``None`` writes nothing (and
    cannot resume).  ``fingerprint`` identifies the job (e.g. the channel space): a checkpoint
    with another one is refused.  ``identity`` (plain JSON, :mod:`metaprune.engine.identity`) is
    what the run's result depends on: it is stored in every checkpoint and a resume from a
    checkpoint of another identity raises :class:`~metaprune.engine.identity.StaleStageError`
    naming the keys that differ.  ``meta`` is plain JSON stored in every checkpoint (e.g. the
    space description).
    """

    def __init__(
        self,
        model: nn.Module,
        loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
        out_dir: str | os.PathLike | None,
        *,
        train: TrainConfig | None = None,
        optim: OptimConfig | None = None,
        sched: SchedConfig | None = None,
        step_fn: StepFn = supervised_step,
        validate_fn: ValidateFn | None = None,
        fingerprint: str = "",
        identity: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        runtime: Runtime | None = None,
        find_unused_parameters: bool = False,
    ) -> None:
        # range-checked here too: a caller's own configs (train_pruningnet(..., grad_clip=-1))
        # do not pass the start-up check of the config groups
        self.cfg = (train or TrainConfig()).validate()
        self.optim_cfg = (optim or OptimConfig()).validate()
        self.sched_cfg = (sched or SchedConfig()).validate()
        cfg = self.cfg
        self.runtime = rt = runtime or Runtime.setup(cfg.device, cfg.amp, cfg.channels_last)
        seed_everything(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.loader = loader
        self.step_fn = step_fn
        self.validate_fn = validate_fn
        engine_cfg = {"train": cfg, "optim": self.optim_cfg, "sched": self.sched_cfg}
        self.meta = _plain_json({**(meta or {}), **{k: asdict(v) for k, v in engine_cfg.items()}})
        self.identity = _plain_json(dict(identity)) if identity is not None else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        n = len(loader)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(
                "the training loader yields no batches (data set smaller than a batch?)"
            )
        self.steps_per_epoch = min(n, cfg.max_steps_per_epoch or n)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        # how the data is cut into steps: a resume cut otherwise (another world size, a loader of
        # another length) would continue the schedule and the data order out of step
        self.layout = {"world_size": rt.world_size, "steps_per_epoch": self.steps_per_epoch}

        self.module = model.to(rt.device)
        if rt.channels_last:
            conv_weights_channels_last(self.module)
        self.optimizer = build_optimizer(self.module, self.optim_cfg)
        self.scheduler = build_scheduler(
            self.optimizer, self.sched_cfg, self.total_steps, self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimisation steps
        self.history: list[dict[str, float]] = []

        self.store = (
            CheckpointStore(self.out_dir, fingerprint) if self.out_dir is not None else None
        )
        if self.store is None:
            if cfg.resume:
                raise ValueError("train.resume needs an output directory to resume from")
        elif cfg.resume:
            state = self.store.load()
            if state is not None:
                fresh = f"delete {self.out_dir} or choose another output directory"
                if self.identity is not None:
                    require_identity(self.out_dir, state.get("identity"), self.identity, fresh)
                if state.get("layout") is not None:  # recorded since this check exists
                    require_identity(self.out_dir, state["layout"], self.layout, fresh)
                self._restore(state)
        elif self.store.exists():
            raise CheckpointError(
                f"{self.out_dir} already holds the checkpoint of a run: set train.resume=true to "
                "continue it, or choose another output directory"
            )

        self.model: nn.Module = self.module
        if rt.distributed:
            self.model = DistributedDataParallel(
                self.module,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.writer = None

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this epoch ended."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": get_rng_state(),
            "history": self.history,
            "meta": self.meta,
            "identity": self.identity,
            "layout": self.layout,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint in {self.out_dir} does not fit this model or optimiser: {e}"
            ) from e
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        log.info("resumed %s at epoch %d, step %d", self.out_dir, self.epoch, self.step)

    # -- loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns ``{epochs, steps, seconds, history, val}``."""
        rt, cfg = self.runtime, self.cfg
        t0 = time.perf_counter()
        if rt.is_main and self.out_dir is not None and self.epoch < cfg.epochs:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step or None)
        try:
            for epoch in range(self.epoch, cfg.epochs):
                record = self._train_epoch(epoch)
                val = self._validate()
                record.update({f"val/{k}": float(v) for k, v in val.items()})
                self.history.append(record)
                self.epoch = epoch + 1
                if self.writer is not None:
                    for k, v in val.items():
                        self.writer.add_scalar(f"val/{k}", v, self.step)
                    self.writer.flush()
                if rt.is_main and self.store is not None:
                    self.store.save(self.state_dict())
                if rt.is_main:
                    log.info("epoch %d/%d %s", self.epoch, cfg.epochs, record)
                rt.barrier()
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        last = self.history[-1] if self.history else {}
        return {
            "epochs": self.epoch,
            "steps": self.step,
            "seconds": time.perf_counter() - t0,
            "history": self.history,
            "val": {k[4:]: v for k, v in last.items() if k.startswith("val/")},
        }

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        rt, cfg = self.runtime, self.cfg
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        self.model.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (rt.is_main and cfg.progress and sys.stderr.isatty()),
        )
        loss_sum = torch.zeros((), device=rt.device)
        t_epoch = t_log = time.perf_counter()
        seen = seen_log = steps = 0
        for x, y in itertools.islice(self.loader, self.steps_per_epoch):
            loss = self._step(x, y)
            loss_sum += loss.detach().float()
            seen += x.shape[0]
            steps += 1
            bar.update()
            if self.step % cfg.log_every == 0:
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss is {value} at step {self.step}")
                now = time.perf_counter()
                ips = rt.world_size * (seen - seen_log) / max(now - t_log, 1e-9)
                t_log, seen_log = now, seen
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}", ips=f"{ips:.0f}")
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", value, self.step)
                    self.writer.add_scalar("train/lr", lr, self.step)
                    self.writer.add_scalar("train/throughput", ips, self.step)
        bar.close()
        if steps == 0:
            raise ValueError("the training loader yielded no batches")
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        loss = rt.mean(float(loss_sum) / steps)
        if not math.isfinite(loss):
            raise FloatingPointError(f"mean training loss of epoch {epoch + 1} is {loss}")
        elapsed = time.perf_counter() - t_epoch
        return {
            "epoch": epoch + 1,
            "train_loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "img_per_s": rt.world_size * seen / max(elapsed, 1e-9),
            "seconds": elapsed,
        }

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rt, cfg = self.runtime, self.cfg
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        if rt.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        rng = np.random.default_rng([cfg.seed, self.step])
        with rt.autocast():
            loss = self.step_fn(self.model, x, y, rng, self.loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss

    def _validate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.validate_fn is not None and self.runtime.is_main:
            metrics = dict(self.validate_fn(self.module))
        self.runtime.barrier()
        return metrics
