"""The two kinds of image set a split can be, and the errors of the data package.

Small-image data (Fashion-MNIST, CIFAR-10, fake) lives in memory as one uint8 tensor (N, C, H, W)
that the loader moves to the device once and augments there (:class:`TensorImages`); an
ImageNet-layout folder is a list of (path, label) decoded by DataLoader workers
(:class:`FolderImages`).  Both carry the per-channel mean/std used to normalise on the device and
can be cut into subsets by index (the ``train`` / ``search`` split, the ``*_limit`` subsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch


class DataError(ValueError):
    """A data set that is missing, corrupt or misconfigured; the message names the path or field."""


def mix_seed(*words: int) -> int:
    """One 32-bit seed from several integers (seed, epoch, rank, ...), without collisions such
    as (0, 1) vs (1, 0)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def _as_index(idx: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


@dataclass(eq=False)
class TensorImages:
    """An in-memory image set: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,).

    ``pad`` is the random-crop padding in pixels and ``hflip`` whether horizontal flips are a
    valid augmentation; ``augment=False`` turns both off for training loaders.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int
    hflip: bool = True
    augment: bool = True
    _on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise DataError(
                f"mean/std need {self.images.shape[1]} channels, got "
                f"{len(self.mean)}/{len(self.std)}"
            )
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> TensorImages:
        """The images at ``idx`` (a copy; the device cache is not shared)."""
        i = _as_index(idx)
        return replace(self, images=self.images[i], labels=self.labels[i], _on_device={})

    def on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) on ``device``, copied there once and kept."""
        key = str(torch.device(device))
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]


@dataclass(eq=False)
class FolderImages:
    """Images on disk, ``samples`` = [(path, label)], decoded and resized by loader workers.

    Training loaders use RandomResizedCrop(``image_size``) + horizontal flip, evaluation loaders
    Resize(``image_size`` * 256 / 224) + CenterCrop(``image_size``) (the ImageNet recipe).
    """

    samples: list[tuple[str, int]]
    classes: list[str]
    image_size: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    augment: bool = True
    num_workers: int = 2

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([y for _, y in self.samples], dtype=torch.long)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, self.image_size, self.image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> FolderImages:
        return replace(self, samples=[self.samples[i] for i in _as_index(idx).tolist()])


ImageSet = TensorImages | FolderImages
