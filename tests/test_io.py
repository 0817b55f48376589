"""Atomic writes, the JSON reader and the run-directory lock (metaprune.io)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metaprune import io as mio
from metaprune.io import (
    LOCK_FILE,
    CheckpointError,
    RunLockedError,
    atomic_path,
    atomic_write_json,
    read_json,
    run_lock,
)


@pytest.mark.parametrize("mask", [0o027, 0o002])
def test_atomic_write_applies_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        path = atomic_write_json(tmp_path / "result.json", {"a": 1})
        with atomic_path(tmp_path / "model.onnx", suffix=".onnx") as tmp:
            assert tmp.suffix == ".onnx"
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for p in (path, tmp_path / "model.onnx"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_full_disk_names_the_target_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = atomic_write_json(tmp_path / "metrics.json", {"old": True})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mio.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left.*metrics\.json") as exc:
        atomic_write_json(target, {"new": True})
    assert exc.value.errno == errno.ENOSPC and str(target) in str(exc.value)
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_read_json_names_a_corrupt_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    with pytest.raises(CheckpointError, match=f"{path} does not exist"):
        read_json(path)
    path.write_text('{"epochs": 3')
    with pytest.raises(CheckpointError, match=rf"{path} is corrupt \(not valid JSON\)"):
        read_json(path)

    class TableError(ValueError):
        pass

    with pytest.raises(TableError, match=f"latency table {path} is corrupt"):
        read_json(path, "latency table", TableError)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_json(path)
    path.write_text('{"epochs": 3}')
    assert read_json(path) == {"epochs": 3}


def test_second_lock_fails_naming_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path, "train") as lock:
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on .*\(train, since"):
            run_lock(tmp_path, "search").__enter__()
    assert not (tmp_path / LOCK_FILE).exists()
    with run_lock(tmp_path, "search"):  # released: free again
        pass


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    holder = (
        "import fcntl, json, os, sys\n"
        f"fd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "info = dict(pid=os.getpid(), host='h', command='pipeline', started='t')\n"
        "os.write(fd, json.dumps(info).encode())\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"pid {proc.pid} on h \(pipeline"):
            run_lock(tmp_path).__enter__()
    finally:
        proc.communicate("")
    with run_lock(tmp_path):  # the holder exited: the kernel released its lock
        pass


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "command": "train", "started": "t"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    with run_lock(tmp_path, "retrain") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


@pytest.mark.parametrize("stage", ["train", "retrain"])
def test_a_corrupt_stage_result_names_the_file(tmp_path: Path, stage: str) -> None:
    from metaprune.retrain import retrain
    from metaprune.schema import load_config
    from metaprune.train import train

    cfg = load_config(["experiment=tiny", "retrain.uniform=0.5"])
    if stage == "train":
        (tmp_path / "pruningnet.pt").write_bytes(b"")
    bad = tmp_path / ("metrics.json" if stage == "train" else "result.json")
    bad.write_text('{"fingerprint": ')
    with pytest.raises(CheckpointError, match=f"{bad} is corrupt"):
        (train if stage == "train" else retrain)(cfg, tmp_path)
