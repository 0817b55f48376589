"""The ``data`` config group and the three splits every run uses.

MetaPruning scores candidate networks on images held out of the training set (Liu et al., ICCV
2019, sec. 4: 50k images of ImageNet train) and reports the official validation set, which is
never used for selection.  Here every data set gets the same three splits:

* ``search``: ``search_size`` images carved from the official training set with ``split_seed``,
  class-balanced (default 10%);
* ``train``: the rest of the official training set (disjoint from ``search``);
* ``test``: the official test set.

``train_limit`` / ``search_limit`` / ``test_limit`` then keep a deterministic class-balanced
subset of each split, for runs on a small budget; the splits stay disjoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from metaprune.data import cifar, fashion_mnist
from metaprune.data.fake import make_fake
from metaprune.data.folder import load_image_folder
from metaprune.data.images import DataError, ImageSet
from metaprune.groups import to_dataclass

NAMES = ("fashion_mnist", "cifar10", "imagefolder", "fake")
DEFAULT_ROOTS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "data/fashion_mnist"),
    "cifar10": ("data/cifar10", "data"),
}
DOWNLOAD_ROOTS = {"fashion_mnist": "data/fashion_mnist", "cifar10": "data/cifar10"}


@dataclass
class DataConfig:
    """Schema of the ``data`` config group."""

    name: str = "fashion_mnist"
    """Data set: ``fashion_mnist``, ``cifar10``, ``imagefolder`` (ImageNet layout) or ``fake``."""
    root: str | None = None
    """Data folder; null = the data set's default (fashion_mnist: the Debian package's
    ``/usr/share/datasets/fashion-mnist``, then ``data/fashion_mnist``; cifar10: ``data/cifar10``,
    then ``data``).  Required for ``imagefolder``; unused for ``fake``."""
    search_size: float = 0.1
    """Size of the ``search`` split held out of the training set: a fraction if < 1, else a
    count of images; 0 = no search split."""
    split_seed: int = 0
    """Seed of the search split and of the ``*_limit`` subsets."""
    train_limit: int | None = None
    """Keep at most this many ``train`` images (class-balanced, deterministic); null = all."""
    search_limit: int | None = None
    """Keep at most this many ``search`` images; null = all."""
    test_limit: int | None = None
    """Keep at most this many ``test`` images; null = all."""
    augment: bool = True
    """Augment training batches (random crop with padding, horizontal flip)."""
    image_size: int | None = None
    """Image side for ``imagefolder`` (default 224) and ``fake`` (default 32); the other data sets
    have a fixed size and reject it."""
    fake_size: int = 512
    """``fake``: number of training images (before the search split)."""
    fake_test_size: int = 128
    """``fake``: number of test images."""
    fake_classes: int = 10
    """``fake``: number of classes."""
    fake_channels: int = 3
    """``fake``: 1 or 3 channels."""
    num_workers: int = 2
    """``imagefolder``: DataLoader worker processes decoding JPEGs."""
    download: bool = False
    """Fetch the data set with torchvision's downloader if it is not found (needs internet)."""

    def validate(self) -> DataConfig:
        """Check names and ranges without touching the disk; raises :class:`DataError` naming
        the field."""
        if self.name not in NAMES:
            raise DataError(f"unknown data set data.name={self.name!r}; known: {', '.join(NAMES)}")
        _check_size(self.search_size, "data.search_size")
        for what in ("train_limit", "search_limit", "test_limit"):
            limit = getattr(self, what)
            if limit is not None and limit < 1:
                raise DataError(f"data.{what}={limit}: expected a positive count or null")
        if self.image_size is not None:
            if self.name not in ("imagefolder", "fake"):
                raise DataError(
                    f"data.image_size applies to imagefolder and fake, not to {self.name}"
                )
            if self.image_size < 4:
                raise DataError(f"data.image_size={self.image_size}: expected >= 4")
        if self.name == "imagefolder" and self.root is None:
            raise DataError(
                "data.name=imagefolder needs data.root (a folder with train/ and "
                "val/ sub-folders of class folders)"
            )
        if self.name == "fake" and not (
            self.fake_size >= 1
            and self.fake_test_size >= 1
            and self.fake_classes >= 2
            and self.fake_channels in (1, 3)
        ):
            raise DataError(
                "data.fake_size and data.fake_test_size must be >= 1, data.fake_classes >= 2 "
                f"and data.fake_channels 1 or 3; got {self.fake_size}, {self.fake_test_size}, "
                f"{self.fake_classes}, {self.fake_channels}"
            )
        if self.num_workers < 0:
            raise DataError(f"data.num_workers={self.num_workers}: expected >= 0")
        return self


@dataclass
class Datasets:
    """The three splits of a data set (each a ``TensorImages`` or ``FolderImages``)."""

    name: str
    train: ImageSet
    search: ImageSet
    test: ImageSet

    @property
    def num_classes(self) -> int:
        return self.test.num_classes

    @property
    def classes(self) -> list[str]:
        return self.test.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images a loader yields."""
        return self.test.input_shape


def as_data_config(cfg: DataConfig | DictConfig | Mapping[str, Any]) -> DataConfig:
    """A checked :class:`DataConfig` from itself, an OmegaConf node or a plain mapping
    (:func:`metaprune.groups.to_dataclass`: an unknown key or a wrong type is a ``ConfigError``,
    a bad value a :class:`DataError`, each naming the field)."""
    return to_dataclass(DataConfig, cfg, "data")


def balanced_subset(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` elements of ``labels``, as class-balanced as possible.

    Classes are dealt round-robin from a random permutation: every class gets ``k // C`` or one
    more (or all it has), and which images are taken depends only on ``rng``.
    """
    n = len(labels)
    perm = rng.permutation(n)
    lab = labels[perm]
    order = np.argsort(lab, kind="stable")
    grouped = lab[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.searchsorted(grouped, grouped, side="left")
    take = np.lexsort((np.arange(n), rank))[:k]
    return np.sort(perm[take])


def _check_size(size: float, what: str) -> None:
    if size < 0 or (size >= 1 and size != int(size)):
        raise DataError(f"{what}={size}: expected a fraction in [0, 1) or a whole count")


def _count(size: float, n: int, what: str) -> int:
    _check_size(size, what)
    k = round(size * n) if size < 1 else int(size)
    if k >= n:
        raise DataError(
            f"{what}={size} asks for {k} of the {n} training images: nothing would "
            "be left to train on"
        )
    return k


def split_train_search(
    labels: torch.Tensor, search_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, search indices) of an official training set: disjoint, sorted, and a
    function of (labels, search_size, seed) only."""
    lab = labels.numpy()
    k = _count(search_size, len(lab), "data.search_size")
    search = balanced_subset(lab, k, np.random.default_rng([seed, 0]))
    train = np.setdiff1d(np.arange(len(lab)), search, assume_unique=True)
    return train, search


def _limit(images: ImageSet, limit: int | None, seed: int, stream: int, what: str) -> ImageSet:
    if limit is None or limit >= len(images):
        return images
    idx = balanced_subset(images.labels.numpy(), limit, np.random.default_rng([seed, stream]))
    return images.subset(idx)


def _find_or_download(
    cfg: DataConfig,
    find: Callable[[Path], object],
    download: Callable[[Path], None],
    how_to_get: str,
) -> Path:
    """The first candidate root where ``find`` finds the data (``cfg.root``, else the data set's
    defaults); with ``cfg.download``, torchvision's downloader fills ``cfg.root`` or the default
    download folder instead."""
    candidates = [Path(p) for p in ([cfg.root] if cfg.root else DEFAULT_ROOTS[cfg.name])]
    for root in candidates:
        if find(root) is not None:
            return root
    if cfg.download:
        root = Path(cfg.root or DOWNLOAD_ROOTS[cfg.name])
        try:
            download(root)
        except Exception as e:  # no internet, a proxy, a full disk: one message
            raise DataError(f"downloading {cfg.name} into {root} failed ({e}): {how_to_get}") from e
        return root
    tried = ", ".join(str(p) for p in candidates)
    missing = [str(p) for p in candidates if not p.exists()]
    state = f" ({', '.join(missing)} does not exist)" if missing else ""
    raise DataError(f"{cfg.name} data not found in {tried}{state}: {how_to_get}")


def _load(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """(official training set, official test set)."""
    if cfg.name == "fashion_mnist":
        root = _find_or_download(
            cfg,
            fashion_mnist.find_root,
            fashion_mnist.download_fashion_mnist,
            fashion_mnist.HOW_TO_GET,
        )
        return (
            fashion_mnist.load_fashion_mnist(root, "train"),
            fashion_mnist.load_fashion_mnist(root, "test"),
        )
    if cfg.name == "cifar10":
        root = _find_or_download(cfg, cifar.find_layout, cifar.download_cifar10, cifar.HOW_TO_GET)
        return cifar.load_cifar10(root, "train"), cifar.load_cifar10(root, "test")
    if cfg.name == "imagefolder":
        root, size = Path(cfg.root), cfg.image_size or 224
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        return (
            load_image_folder(root, "train", size, cfg.num_workers),
            load_image_folder(root, "test", size, cfg.num_workers),
        )
    if cfg.name == "fake":
        size, n = cfg.image_size or 32, cfg.fake_size
        fake = make_fake(n + cfg.fake_test_size, cfg.fake_classes, cfg.fake_channels, size, seed=0)
        return fake.subset(np.arange(n)), fake.subset(np.arange(n, len(fake)))
    raise DataError(f"unknown data set data.name={cfg.name!r}; known: {', '.join(NAMES)}")


def build_datasets(cfg: DataConfig | DictConfig | Mapping[str, Any]) -> Datasets:
    """The ``train`` / ``search`` / ``test`` splits of the data set ``cfg`` describes."""
    cfg = as_data_config(cfg)
    official_train, test = _load(cfg)
    if official_train.classes != test.classes:
        raise DataError(
            f"{cfg.name}: the training and test sets have different classes "
            f"({official_train.classes} vs {test.classes})"
        )
    train_idx, search_idx = split_train_search(
        official_train.labels, cfg.search_size, cfg.split_seed
    )
    splits = {
        "train": official_train.subset(train_idx),
        "search": official_train.subset(search_idx),
        "test": test,
    }
    for stream, (split, limit) in enumerate(
        (("train", cfg.train_limit), ("search", cfg.search_limit), ("test", cfg.test_limit)),
        start=1,
    ):
        splits[split] = _limit(splits[split], limit, cfg.split_seed, stream, f"{split}_limit")
        splits[split].augment = cfg.augment
    return Datasets(name=cfg.name, **splits)
