"""Atomic, safe file I/O for long jobs (DESIGN.md, "Reliability"); not part of the paper.

Every checkpoint, table and result is written to a temporary file in the same directory, flushed
with ``fsync`` and renamed over the target, so a kill leaves either the old or the new file, never
a partial one.  The temporary file gets the mode an ordinary ``open`` would give (``0o666`` less
the umask; ``mkstemp`` alone makes it ``0o600``), and a failed write (a full disk) raises an
``OSError`` naming the target.  Checkpoints load with ``weights_only=True`` and JSON files go
through :func:`read_json`, so a missing or corrupt file is one error naming it.  :func:`run_lock`
keeps two jobs out of one run directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

LOCK_FILE = ".lock"
"""The lock file :func:`run_lock` keeps in a run directory while a job works there."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or belongs to another space or job."""


class RunLockedError(RuntimeError):
    """The run directory is in use by another job (the message names its pid, host and start)."""


def _umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (threads see no gap)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _named(e: OSError, path: Path, doing: str = "writing") -> OSError:
    """``e`` again with the target ``path`` in its message (the temporary name says nothing)."""
    if e.errno is None:
        return OSError(f"{doing} {path}: {e}")
    return OSError(e.errno, f"{e.strerror} ({doing} {path})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; if the body succeeds, fsync it, give it the
    umask's mode and rename it over ``path``.  The temporary name ends with ``suffix`` (pass
    ``path.suffix`` to a writer that picks the format from it); any ``OSError`` is re-raised
    naming ``path``."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise _named(e, path) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_png(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """A matplotlib figure written to ``path`` as PNG atomically (``savefig`` options, e.g.
    ``dpi``, passed on)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically; ``obj`` should hold only tensors and plain data."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(
    path: str | os.PathLike, what: str = "", error: type[ValueError] = CheckpointError
) -> Any:
    """Parse the JSON file ``path``; a missing, unreadable or corrupt file raises ``error``
    (:class:`CheckpointError` unless told) naming it, prefixed by ``what`` (``"latency table"``)."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise error(f"{name} does not exist")
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise error(f"cannot read {name}: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{name} is corrupt (not valid JSON): {e}") from e


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file raises
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a metaprune checkpoint: {e}"
        ) from e


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def _flock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive ``flock``, or None (no ``flock``)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"run directory {path.parent} is in use by {_holder(path)}; wait for it to "
                f"finish or choose another run_name (a dead holder's {LOCK_FILE} is taken over)"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise _named(e, path, "locking") from e
            warnings.warn(f"cannot lock {path} ({e.strerror}); running unlocked", stacklevel=4)
            return None
        # the holder before us may have removed the file between our open and flock: retry
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, command: str = "") -> Iterator[Path]:
    """Hold the lock of ``run_dir`` for the body: a second job into the same directory raises
    :class:`RunLockedError` at once, naming the holder's pid, host, command and start time.

    The lock is an ``flock`` on ``run_dir/.lock``, which holds the holder's details as JSON.  The
    kernel drops it when its process dies, so the file a killed job leaves behind (a dead pid)
    is simply taken over; the file is removed when the body ends.  On a file system without
    ``flock`` the job runs unlocked, with a warning.
    """
    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _flock(path)
    if fd is None:
        yield path
        return
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or "metaprune",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
