"""Data sets, splits and device-side loaders (see :mod:`metaprune.data.datasets`).

``build_datasets(cfg.data)`` gives the ``train`` / ``search`` / ``test`` splits of Fashion-MNIST,
CIFAR-10, an ImageNet-layout folder or fake data; ``make_loader(split, batch_size, train=...)``
gives re-iterable batches ``(x float32 normalised, y int64)`` on the device.
"""

from metaprune.data.datasets import (
    DataConfig,
    Datasets,
    as_data_config,
    balanced_subset,
    build_datasets,
    split_train_search,
)
from metaprune.data.feed import ImageFeed
from metaprune.data.images import DataError, FolderImages, ImageSet, TensorImages
from metaprune.data.loader import Loader, make_loader, random_crop_flip
from metaprune.data.recalib import recalibration_batches

__all__ = [
    "DataConfig",
    "DataError",
    "Datasets",
    "FolderImages",
    "ImageFeed",
    "ImageSet",
    "Loader",
    "TensorImages",
    "as_data_config",
    "balanced_subset",
    "build_datasets",
    "make_loader",
    "random_crop_flip",
    "recalibration_batches",
    "split_train_search",
]
