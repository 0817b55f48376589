"""CIFAR-10 (Krizhevsky, 2009) from torchvision's pickle batches or a folder of JPEGs.

Layouts accepted under the root, tried in this order:

* ``cifar-10-batches-py/`` (torchvision's download, the original pickle batches);
* ``cifar10-jpeg/{train,test}/<class>/*.jpg`` (the JPEG q75 re-encoding shipped as a tarball);
* ``{train,test}/<class>/*.jpg`` directly under the root.

The pickle batches are read by a restricted unpickler that admits only what a CIFAR batch holds
(dicts, lists, bytes, str, numbers and numpy uint8 arrays): a crafted batch file that names any
other global (``os.system``, ...) raises :class:`UnsafePickleError` before anything runs.

A JPEG folder is decoded once (``torchvision.io.decode_jpeg``, batched) and cached as a uint8
tensor file ``<split>.uint8.pt`` beside the class folders, written atomically; later loads read
the cache as long as the folder's file names, sizes and modification times are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from metaprune.data.images import DataError, TensorImages
from metaprune.io import CheckpointError, atomic_torch_save, safe_torch_load

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
HOW_TO_GET = (
    "unpack the CIFAR-10 JPEG tarball there (giving cifar10-jpeg/{train,test}/<class>/*.jpg), "
    "put torchvision's cifar-10-batches-py/ there, or set data.download=true on a machine with "
    "internet"
)
_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG")
_CHUNK = 2048


class UnsafePickleError(DataError):
    """A pickle file that asks for a global a CIFAR batch never holds (it could run code)."""


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as numpy's protocol-2 array pickles use it, for Latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} (only latin1)")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals of a numpy array pickle: Python 2's original batches name
    ``numpy.core.multiarray._reconstruct``; numpy 2 writes ``numpy._core``; protocol 5 uses
    ``_frombuffer``.  Mapped to this numpy's objects, so no module is imported by name."""
    probe = np.zeros(1, dtype=np.uint8)
    reconstruct = probe.__reduce_ex__(2)[0]
    frombuffer = probe.__reduce_ex__(5)[0]
    out: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _encode_latin1,
    }
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


class _BatchUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the globals of a numpy array."""

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing global {module}.{name}: a CIFAR-10 batch holds only dicts, lists, "
                "bytes, str, numbers and numpy arrays"
            ) from None


def find_layout(root: Path) -> tuple[str, Path] | None:
    """("pickle" | "jpeg", folder) for the first layout found under ``root``."""
    if (root / "cifar-10-batches-py" / "test_batch").is_file():
        return "pickle", root / "cifar-10-batches-py"
    for folder in (root / "cifar10-jpeg", root):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return "jpeg", folder
    return None


def load_cifar10(root: Path, split: str) -> TensorImages:
    """The ``train`` (50k) or ``test`` (10k) split as a uint8 (N, 3, 32, 32) image set."""
    layout = find_layout(root)
    if layout is None:
        raise DataError(f"CIFAR-10 not found in {root}: {HOW_TO_GET}")
    kind, folder = layout
    if kind == "pickle":
        images, labels, classes = _read_pickles(folder, split)
    else:
        images, labels, classes = load_jpeg_folder(folder / split)
    return TensorImages(images=images, labels=labels, classes=classes, mean=MEAN, std=STD, pad=4)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"CIFAR-10 batch {path} is not a plain data file: {e}") from None
    except Exception as e:  # pickle raises many types on a truncated or foreign file
        raise DataError(f"cannot read CIFAR-10 batch {path}: {e}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"CIFAR-10 batch {path} is not a dict with b'data' and b'labels'")
    return batch


def _read_pickles(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data, labels = [], []
    for name in names:
        batch = _unpickle(folder / name)
        try:
            x = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise DataError(
                f"CIFAR-10 batch {folder / name} holds no uint8 pixels and integer labels: {e}"
            ) from e
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"CIFAR-10 batch {folder / name} holds data {x.shape} and "
                f"{y.shape[0]} labels; expected (N, 3072) and N"
            )
        data.append(x.reshape(-1, 3, 32, 32))
        labels.append(y)
    return (
        torch.from_numpy(np.concatenate(data)),
        torch.from_numpy(np.concatenate(labels)),
        list(CLASSES),
    )


def _listing(folder: Path) -> tuple[list[str], list[list[str]], str]:
    """(classes, file names per class, fingerprint of names, sizes and mtimes)."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"image folder {folder} has no class sub-folders")
    files, digest = [], hashlib.sha256()
    for c in classes:
        entries = sorted(
            (e for e in os.scandir(folder / c) if e.name.endswith(_EXTENSIONS)),
            key=lambda e: e.name,
        )
        files.append([e.name for e in entries])
        for e in entries:
            st = e.stat()
            digest.update(f"{c}/{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return classes, files, digest.hexdigest()


def _decode_chunk(paths: list[Path]) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        return decode_jpeg([read_file(str(p)) for p in paths], mode=ImageReadMode.RGB)
    except RuntimeError:  # the batch failed: find the culprit to name it
        for p in paths:
            try:
                decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB)
            except RuntimeError as e:
                raise DataError(f"cannot decode JPEG {p}: {e}") from e
        raise


def _decode(paths: list[Path]) -> torch.Tensor:
    out = []
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        for start in range(0, len(paths), _CHUNK):
            out.extend(_decode_chunk(paths[start : start + _CHUNK]))
    shapes = {tuple(x.shape) for x in out}
    if len(shapes) > 1:
        first = tuple(out[0].shape)
        bad = next(p for p, x in zip(paths, out, strict=True) if tuple(x.shape) != first)
        raise DataError(
            f"JPEG {bad} differs in size from {paths[0]} {first}: an in-memory "
            "image set needs one image size (use data.name=imagefolder instead)"
        )
    return torch.stack(out)


def load_jpeg_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images (N, 3, H, W), int64 labels, class names) of ``folder/<class>/*.jpg``.

    Decoded once and cached in ``folder.parent / f"{folder.name}.uint8.pt"``; the cache is used
    while the folder's file names, sizes and modification times are unchanged, rebuilt otherwise.
    """
    classes, files, fingerprint = _listing(folder)
    counts = [len(f) for f in files]
    cache = folder.parent / f"{folder.name}.uint8.pt"
    if cache.is_file():
        try:
            saved = safe_torch_load(cache)
            if saved["fingerprint"] == fingerprint:
                return saved["images"], saved["labels"], classes
        except (CheckpointError, KeyError, TypeError) as e:
            warnings.warn(f"ignoring unreadable cache {cache}: {e}", stacklevel=2)
    paths = [folder / c / name for c, names in zip(classes, files, strict=True) for name in names]
    if not paths:
        raise DataError(f"image folder {folder} holds no JPEG files")
    images = _decode(paths)
    labels = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts))
    try:
        atomic_torch_save(cache, {"images": images, "labels": labels, "fingerprint": fingerprint})
    except OSError as e:
        warnings.warn(f"could not write the decoded-image cache {cache}: {e}", stacklevel=2)
    return images, labels, classes


def download_cifar10(root: Path) -> None:
    """torchvision's downloader into ``root/cifar-10-batches-py`` (needs internet)."""
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)
