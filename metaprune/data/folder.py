"""An ImageNet-layout folder, ``root/{train,val}/<class>/*.jpg``, decoded by loader workers.

MetaPruning trains and searches on ImageNet (Liu et al., ICCV 2019, sec. 4): the standard recipe
is RandomResizedCrop + horizontal flip for training and Resize(256/224) + CenterCrop for
evaluation.  Workers return uint8 tensors; the loader normalises them on the device, as it does
for the in-memory sets, so the host sends a quarter of the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from metaprune.data.images import DataError, FolderImages, mix_seed

_EVAL_SPLITS = ("val", "test")


def load_image_folder(root: Path, split: str, image_size: int, num_workers: int) -> FolderImages:
    """``root/train`` for ``split="train"``; ``root/val`` (or ``root/test``) for ``"test"``."""
    from torchvision.datasets import ImageFolder

    names = ("train",) if split == "train" else _EVAL_SPLITS
    folder = next((root / n for n in names if (root / n).is_dir()), None)
    if folder is None:
        raise DataError(
            f"image folder {root} has no {' or '.join(names)}/ sub-folder; expected "
            "the ImageNet layout root/{train,val}/<class>/*.jpg"
        )
    try:
        scanned = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"cannot read image folder {folder}: {e}") from e
    return FolderImages(
        samples=[(p, int(y)) for p, y in scanned.samples],
        classes=list(scanned.classes),
        image_size=image_size,
        num_workers=num_workers,
    )


def folder_transform(image_size: int, train: bool) -> Callable:
    """PIL image -> uint8 tensor (3, S, S): the ImageNet train or eval crop."""
    from torchvision import transforms as T

    if train:
        crop = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        crop = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    return T.Compose([*crop, T.PILToTensor()])


class FolderDataset(Dataset):
    """``FolderImages`` as a map-style dataset of (uint8 image, label) for a DataLoader.

    The random transform of sample ``i`` draws from a generator seeded with (``seed``, ``i``),
    so augmentation does not depend on the number of workers and leaves the global RNG alone.
    """

    def __init__(self, images: FolderImages, transform: Callable, seed: int) -> None:
        self.samples, self.transform, self.seed = images.samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[i]
        try:
            image = default_loader(path)
        except OSError as e:
            raise DataError(f"cannot decode image {path}: {e}") from e
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, i))
            return self.transform(image), label
