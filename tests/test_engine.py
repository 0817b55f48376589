"""The generic training engine: optimiser groups, schedule, checkpoints and exact resume."""

from __future__ import annotations

import math
import os
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ddp_env
from torch import nn

from metaprune.engine import (
    CheckpointStore,
    OptimConfig,
    Runtime,
    SchedConfig,
    TrainConfig,
    Trainer,
    lr_factor,
    param_groups,
)
from metaprune.engine.identity import StaleStageError
from metaprune.io import CheckpointError, safe_torch_load


class TensorLoader:
    """A re-iterable loader over fixed tensors with a deterministic per-epoch shuffle."""

    def __init__(self, x, y, batch_size, seed=0, rank=0, world_size=1):
        self.x, self.y, self.bs = x, y, batch_size
        self.seed, self.rank, self.world = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x) // (self.bs * self.world)

    def __iter__(self):
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed))
        if self.epoch:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = perm[torch.randperm(len(perm), generator=g)]
        perm = perm[self.rank :: self.world]
        for i in range(len(self)):
            idx = perm[i * self.bs : (i + 1) * self.bs]
            yield self.x[idx], self.y[idx]


def tiny_net(dropout=0.2, bn=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=not bn),
        nn.BatchNorm2d(4) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def data(n=48):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def cpu_runtime():
    return Runtime.setup("cpu", amp="off", channels_last=False)


def make_trainer(
    out, epochs=3, resume=False, step_fn=None, fingerprint="fp-a", identity=None, **train
):
    x, y = data()
    cfg = TrainConfig(epochs=epochs, batch_size=16, resume=resume, log_every=1, seed=3, **train)
    kw = {"step_fn": step_fn} if step_fn is not None else {}
    if identity is not None:
        kw["identity"] = identity
    return Trainer(
        tiny_net(),
        TensorLoader(x, y, 16),
        out,
        train=cfg,
        optim=OptimConfig(lr=0.05, weight_decay=1e-3),
        sched=SchedConfig(name="cosine", warmup_epochs=1),
        fingerprint=fingerprint,
        meta={"space": {"family": "tiny"}},
        runtime=cpu_runtime(),
        validate_fn=lambda m: {"acc": 0.5},
        **kw,
    )


def random_step(model, x, y, rng, loss_fn):
    """A step that draws from every RNG a resume must restore, and from the step rng."""
    keep = torch.from_numpy(rng.random(len(x)) < 0.8)
    scale = 1 + 0.1 * random.random() + 0.1 * float(np.random.rand())
    return scale * loss_fn(model(x[keep]), y[keep])


def test_no_weight_decay_on_bn_and_biases(tmp_path):
    net = tiny_net(bn=True)
    net[0] = nn.Conv2d(1, 4, 3, padding=1, bias=True)
    decay, no_decay = param_groups(net, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(net[0].weight), id(net[6].weight)}
    assert ids(no_decay["params"]) == {
        id(net[0].bias),
        id(net[1].weight),
        id(net[1].bias),
        id(net[6].bias),
    }
    tr = make_trainer(tmp_path, epochs=1)  # the trainer uses the same groups
    assert [g["weight_decay"] for g in tr.optimizer.param_groups] == [1e-3, 0.0]
    assert (
        tr.optimizer.param_groups[0]["nesterov"] and tr.optimizer.param_groups[0]["momentum"] == 0.9
    )


class RowBN(nn.Module):
    """A custom BN keeping one 2-D row of parameters per choice (like the PruningNet's)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 4))
        self.register_buffer("running_mean", torch.zeros(3, 4))


def test_no_weight_decay_on_custom_norm_layers():
    net = nn.Sequential(nn.Linear(4, 4, bias=False), RowBN(), nn.LayerNorm(4))
    decay, no_decay = param_groups(net, 0.1)
    assert [p.shape for p in decay["params"]] == [(4, 4)]
    assert len(no_decay["params"]) == 3  # RowBN.weight, LayerNorm weight and bias


def test_warmup_cosine_and_linear_lr():
    cos = SchedConfig(name="cosine", warmup_epochs=2, final_factor=0.1)
    # 10 steps per epoch, 20 warm-up steps, 100 steps in all
    assert lr_factor(cos, 0, 100, 10) == pytest.approx(1 / 20)
    assert lr_factor(cos, 19, 100, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 20, 100, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 60, 100, 10) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    )
    assert lr_factor(cos, 100, 100, 10) == pytest.approx(0.1)
    lin = SchedConfig(name="linear", warmup_epochs=0, final_factor=0.0)
    assert [lr_factor(lin, s, 4, 2) for s in range(5)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])


def test_scheduler_drives_optimizer_lr(tmp_path):
    seen = []

    def step(model, x, y, rng, loss_fn):
        seen.append(tr.optimizer.param_groups[0]["lr"])
        return loss_fn(model(x), y)

    tr = make_trainer(tmp_path, epochs=2, step_fn=step)
    tr.fit()
    # 3 steps per epoch, 1 warm-up epoch, cosine over the remaining 3 steps
    expected = [0.05 * lr_factor(tr.sched_cfg, s, 6, 3) for s in range(6)]
    assert seen == pytest.approx(expected)
    assert seen[:3] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05])


def test_label_smoothing_passed_through(tmp_path):
    got = []

    def step(model, x, y, rng, loss_fn):
        logits = model(x)
        loss = loss_fn(logits, y)
        got.append((loss.item(), F.cross_entropy(logits, y, label_smoothing=0.3).item()))
        return loss

    make_trainer(tmp_path, epochs=1, step_fn=step, label_smoothing=0.3).fit()
    assert got and all(a == pytest.approx(b) for a, b in got)


def test_grad_clip_bounds_the_update(tmp_path):
    x, y = data(16)
    net = tiny_net(dropout=0.0)
    before = [p.detach().clone() for p in net.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=16, grad_clip=1e-3, log_every=1)
    optim = OptimConfig(lr=1.0, momentum=0.0, weight_decay=0.0)
    Trainer(
        net,
        TensorLoader(x, y, 16),
        tmp_path,
        train=cfg,
        optim=optim,
        sched=SchedConfig(name="constant"),
        runtime=cpu_runtime(),
    ).fit()
    delta = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(net.parameters(), before, strict=True)]
    )
    assert delta.norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full = make_trainer(tmp_path / "full", epochs=3, step_fn=random_step)
    full_out = full.fit()

    calls = {"n": 0}

    def killed(model, x, y, rng, loss_fn):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5 of 9: in the middle of epoch 2
            raise KeyboardInterrupt
        return random_step(model, x, y, rng, loss_fn)

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "run", epochs=3, step_fn=killed).fit()
    assert safe_torch_load(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    resumed = make_trainer(tmp_path / "run", epochs=3, resume=True, step_fn=random_step)
    assert (resumed.epoch, resumed.step) == (1, 3)
    out = resumed.fit()

    assert out["steps"] == full_out["steps"] == 9
    for a, b in zip(
        full.module.state_dict().values(), resumed.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(full.optimizer.state.values(), resumed.optimizer.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in h]  # noqa: E731
    assert strip(out["history"]) == strip(full_out["history"])


def test_checkpoint_holds_plain_metadata(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    state = safe_torch_load(tmp_path / "checkpoint.pt")  # weights_only=True
    assert state["meta"]["space"] == {"family": "tiny"}
    assert state["meta"]["train"]["epochs"] == 1 and state["meta"]["optim"]["lr"] == 0.05
    assert state["history"][0]["val/acc"] == 0.5
    assert any(f.name.startswith("events") for f in (tmp_path / "tb").iterdir())


def test_checkpoint_of_another_space_refused(tmp_path):
    make_trainer(tmp_path, epochs=1, fingerprint="aaaa1111").fit()
    with pytest.raises(CheckpointError, match=r"aaaa1111.*bbbb2222"):
        make_trainer(tmp_path, epochs=1, resume=True, fingerprint="bbbb2222")


def test_resume_with_another_identity_refused(tmp_path):
    """The identity is stored in each checkpoint; a resume with another one stops naming the
    keys that differ, before anything is loaded; the same identity resumes."""
    ident = {"train": {"epochs": 1}, "optim": {"lr": 0.05}}
    make_trainer(tmp_path, epochs=1, identity=ident).fit()
    assert safe_torch_load(tmp_path / "checkpoint.pt")["identity"] == ident
    other = {"train": {"epochs": 1}, "optim": {"lr": 0.1}}
    with pytest.raises(StaleStageError, match=r"optim\.lr: 0\.05 -> 0\.1.*delete"):
        make_trainer(tmp_path, epochs=1, resume=True, identity=other)
    assert make_trainer(tmp_path, epochs=1, resume=True, identity=ident).step == 3
    make_trainer(tmp_path / "old", epochs=1).fit()  # a checkpoint without an identity
    with pytest.raises(StaleStageError, match="no stage identity"):
        make_trainer(tmp_path / "old", epochs=1, resume=True, identity=ident)


def test_resume_with_another_epoch_length_refused(tmp_path):
    """A resume whose epochs hold another number of steps (another DDP world size, or a loader
    of another length) would continue the schedule out of step: refused, naming the key."""
    make_trainer(tmp_path, epochs=2).fit()  # 3 steps an epoch
    with pytest.raises(StaleStageError, match=r"steps_per_epoch: 3 -> 2"):
        make_trainer(tmp_path, epochs=2, resume=True, max_steps_per_epoch=2)
    assert make_trainer(tmp_path, epochs=2, resume=True).step == 6


def test_identity_leaves_out_execution_options():
    a = TrainConfig(epochs=2, device="cuda", amp="bf16", log_every=7, progress=False, resume=True)
    b = TrainConfig(epochs=2, compile=True, channels_last=True, deterministic=True)
    assert a.identity() == b.identity() and "epochs" in a.identity()
    assert TrainConfig(epochs=3).identity() != a.identity()


def test_trainer_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    out = Trainer(tiny_net(), TensorLoader(x, y, 16), None, runtime=cpu_runtime()).fit()
    assert out["steps"] == 3 and not list(tmp_path.iterdir())


def test_existing_run_needs_resume(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(CheckpointError, match="resume"):
        make_trainer(tmp_path, epochs=1)


def test_finished_run_resumes_to_nothing(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    tr = make_trainer(tmp_path, epochs=1, resume=True)
    before = [p.clone() for p in tr.module.parameters()]
    out = tr.fit()
    assert out["steps"] == 3 and out["val"] == {"acc": 0.5}
    assert all(torch.equal(a, b) for a, b in zip(before, tr.module.parameters(), strict=True))


def test_corrupt_checkpoint_refused_previous_kept(tmp_path):
    make_trainer(tmp_path, epochs=2).fit()
    latest, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert safe_torch_load(prev)["epoch"] == 1
    prev_bytes = prev.read_bytes()
    latest.write_bytes(latest.read_bytes()[:1000])  # a torn write
    with pytest.raises(CheckpointError, match="corrupt"):
        safe_torch_load(latest)

    tr = make_trainer(tmp_path, epochs=2, resume=True)
    assert tr.epoch == 1  # fell back to the previous checkpoint
    tr.fit()
    assert prev.read_bytes() == prev_bytes  # the corrupt file was not rotated over it
    assert safe_torch_load(latest)["epoch"] == 2

    latest.write_bytes(b"garbage")
    prev.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(tmp_path, "fp-a").load()


def test_runtime_options():
    rt = Runtime.setup("cpu", amp="auto", channels_last="auto")
    assert rt.amp_dtype is None and not rt.channels_last and rt.world_size == 1
    assert Runtime.setup("cpu", amp="bf16", channels_last=True).amp_dtype == torch.bfloat16
    assert Runtime.setup("cpu", amp=False).amp_dtype is None
    with pytest.raises(ValueError, match="fp16"):
        Runtime.setup("cpu", amp="fp16")
    with pytest.raises(ValueError, match="channels_last"):
        Runtime.setup("cpu", channels_last="sometimes")


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    import metaprune.engine.runtime as runtime

    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert Runtime.setup("cpu", amp="bf16").amp_dtype == torch.bfloat16
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Runtime.setup("cpu", amp="bf16")
        Runtime.setup("cpu", amp="off")


def test_native_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    import metaprune.engine.runtime as runtime

    for native, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(runtime, "native_cpu_bf16", lambda native=native: native)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # never the emulated path, so never its warning
            assert Runtime.setup("cpu", amp="native").amp_dtype == want
            assert Runtime.setup("cpu", amp="auto").amp_dtype is None  # training: CUDA only
    TrainConfig(amp="native").validate()
    with pytest.raises(ValueError, match=r"train\.amp"):
        TrainConfig(amp="natively").validate()


def test_bf16_autocast_step_on_cpu(tmp_path):
    """amp=bf16: the forward runs in bfloat16 and its loss is the float32 loss up to bf16
    rounding."""
    x, y = data(32)
    cfg = TrainConfig(epochs=1, batch_size=16, amp="bf16", channels_last="true")
    rt = Runtime.setup("cpu", amp=cfg.amp, channels_last=cfg.channels_last)
    seen = []

    def step(model, x, y, rng, loss_fn):
        logits = model(x)
        with torch.autocast("cpu", enabled=False):
            ref = loss_fn(model(x), y)
        loss = loss_fn(logits, y)
        seen.append((logits.dtype, loss.item(), ref.item()))
        return loss

    net = tiny_net(dropout=0.0)
    out = Trainer(net, TensorLoader(x, y, 16), tmp_path, train=cfg, runtime=rt, step_fn=step).fit()
    assert [s[0] for s in seen] == [torch.bfloat16] * 2
    assert all(a == pytest.approx(b, rel=2e-2) for _, a, b in seen), seen
    assert out["history"][0]["train_loss"] == pytest.approx(sum(s[1] for s in seen) / 2)


def _ddp_worker(rank, world, port, out, x, y):
    ddp_env(rank, world, port)
    cfg = TrainConfig(epochs=2, batch_size=8, device="cpu", log_every=1)
    tr = Trainer(
        tiny_net(dropout=0.0, bn=False),
        TensorLoader(x, y, 8, rank=rank, world_size=world),
        out,
        train=cfg,
        optim=OptimConfig(lr=0.1),
    )
    assert tr.runtime.world_size == world and isinstance(
        tr.model, nn.parallel.DistributedDataParallel
    )
    tr.fit()
    torch.save(tr.module.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    """Two ranks with 8 images each == one process with the same 16 images per step."""
    import socket

    import torch.multiprocessing as mp

    x, y = data(48)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp"), x, y), nprocs=2)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt")

    class Interleaved(TensorLoader):
        """Each step: rank 0's 8 images, then rank 1's."""

        def __iter__(self):
            shards = [TensorLoader(x, y, 8, rank=r, world_size=2) for r in range(2)]
            for shard in shards:
                shard.set_epoch(self.epoch)
            for (xa, ya), (xb, yb) in zip(*shards, strict=True):
                yield torch.cat([xa, xb]), torch.cat([ya, yb])

    single = tiny_net(dropout=0.0, bn=False)
    cfg = TrainConfig(epochs=2, batch_size=16, log_every=1)
    Trainer(
        single,
        Interleaved(x, y, 16),
        tmp_path / "single",
        train=cfg,
        optim=OptimConfig(lr=0.1),
        runtime=cpu_runtime(),
    ).fit()
    for k, v in single.state_dict().items():
        assert torch.equal(r0[k], r1[k])
        torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6)


def test_channels_last_converts_conv_weights_only(tmp_path):
    """channels_last: the plain convs' weights and the activations go channels-last; the
    PruningNet's 4-d meta block weights (generators, not convs) keep their layout."""
    from metaprune import create_space
    from metaprune.pruningnet import create_pruningnet

    rt = Runtime.setup("cpu", amp="off", channels_last=True)
    space = create_space("mobilenet_v2", stem="cifar", width_mult=0.125, input_size=8)
    pnet = create_pruningnet(space, hidden=4)
    x, y = data(16)
    seen = []

    def step(model, x, y, rng, loss_fn):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return loss_fn(model(x, space.max()), y)

    cfg = TrainConfig(epochs=1, batch_size=16, log_every=1)
    loader = TensorLoader(x.repeat(1, 3, 1, 1), y, 16)  # 3 channels: the format is not vacuous
    Trainer(pnet, loader, tmp_path / "p", train=cfg, runtime=rt, step_fn=step).fit()
    assert seen == [True]
    meta = [m.weight for m in pnet.meta.values()]
    assert meta and all(w.dim() == 4 and w.is_contiguous() for w in meta)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    Trainer(net, loader, tmp_path / "n", train=cfg, runtime=rt)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous()
