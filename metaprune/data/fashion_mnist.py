"""Fashion-MNIST (Xiao et al., 2017) read straight from its IDX files with numpy.

Accepted layouts under the root: the IDX files themselves (``train-images-idx3-ubyte.gz`` ...,
the layout of the Debian package ``dataset-fashion-mnist`` in ``/usr/share/datasets/
fashion-mnist``) or torchvision's download layout ``FashionMNIST/raw/``; each file may be gzipped
or not.  Every header is checked (magic number, dimensions, byte count), so a partial or corrupt
file raises :class:`DataError` naming it instead of yielding garbage images.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from metaprune.data.images import DataError, TensorImages

CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MEAN, STD = (0.2860,), (0.3530,)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "install the Debian package (apt-get install dataset-fashion-mnist, files in "
    "/usr/share/datasets/fashion-mnist), point data.root at a folder holding the IDX files, or set "
    "data.download=true on a machine with internet"
)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of ``ndim`` dimensions from ``path`` (``.gz`` or raw).

    Raises :class:`DataError` naming the file if it cannot be read, is truncated, or its header
    does not describe a uint8 array of ``ndim`` dimensions matching the byte count.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes, header needs {header})")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise DataError(
            f"IDX file {path} has magic number {magic:#010x}, expected "
            f"{0x0800 + ndim:#010x} (uint8, {ndim}-d)"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"IDX file {path} has {len(raw)} bytes, its header {dims} needs "
            f"{expected}: the file is partial or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_root(root: Path) -> Path | None:
    """The folder under ``root`` holding the IDX files (root itself or ``FashionMNIST/raw``)."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        if all(_find(folder, stem) for pair in _FILES.values() for stem in pair):
            return folder
    return None


def load_fashion_mnist(root: Path, split: str) -> TensorImages:
    """The ``train`` (60k) or ``test`` (10k) split as a uint8 (N, 1, 28, 28) image set."""
    folder = find_root(root)
    if folder is None:
        raise DataError(
            f"Fashion-MNIST IDX files not found in {root} (nor in "
            f"{root / 'FashionMNIST' / 'raw'}): {HOW_TO_GET}"
        )
    img_path, lab_path = (_find(folder, stem) for stem in _FILES[split])
    images = read_idx(img_path, 3)
    labels = read_idx(lab_path, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(
            f"{img_path} holds images of shape {images.shape} for "
            f"{labels.shape[0]} labels in {lab_path}; expected (N, 28, 28)"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{lab_path} holds label {labels.max()}, expected 0..9")
    return TensorImages(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(CLASSES),
        mean=MEAN,
        std=STD,
        pad=2,
    )


def download_fashion_mnist(root: Path) -> None:
    """torchvision's downloader into ``root/FashionMNIST/raw`` (needs internet)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), download=True)  # fetches the train and the test files
