"""Batches on the device: shuffling, DDP sharding, augmentation and normalisation.

An in-memory image set is copied to the device once; each batch is gathered there and, for a
training loader, augmented with batched tensor ops (random crop from a zero-padded image and a
horizontal flip, both as one gather; no per-image Python loop), so that a GPU is not starved by
2 CPU cores.  An image folder is decoded by DataLoader workers into uint8 tensors.  Either way
the loader yields ``(x float32 normalised, y int64)`` on the device.

Order is a function of (seed, epoch): every rank draws the same permutation and takes every
``world_size``-th element from ``rank``, so shards are disjoint; augmentation draws also depend
on the rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from metaprune.data.folder import FolderDataset, folder_transform
from metaprune.data.images import DataError, FolderImages, ImageSet, TensorImages, mix_seed

Batch = tuple[torch.Tensor, torch.Tensor]


def random_crop_flip(
    x: torch.Tensor, pad: int, hflip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random ``pad``-pixel-padded crop (zero fill) and, if ``hflip``, a random horizontal flip
    of every image of the batch ``x`` (B, C, H, W); same shape and dtype, on ``x``'s device."""
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    cols = torch.arange(w, device=dev).expand(b, w)
    if hflip:
        flip = torch.randint(0, 2, (b, 1), device=dev, generator=generator).bool()
        cols = torch.where(flip, w - 1 - cols, cols)
    rows = oy + torch.arange(h, device=dev)  # (B, H)
    cols = ox + cols  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    # one gather straight into a fresh (B, C, H, W) tensor with the standard strides (a permuted
    # view of a (B, H, W, C) gather looks channels-last for 1-channel images, which sent a CPU
    # conv backward into heap corruption)
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class Loader:
    """A loader of ``dataset`` yielding ``(x float32 normalised, y int64)`` on ``device``.

    ``train=True`` shuffles (from ``seed`` and the epoch set by :meth:`set_epoch`), augments on
    the device when the data set's ``augment`` is on, and drops the last partial batch unless
    ``drop_last=False``; ``train=False`` keeps the order, does not augment and keeps every
    sample.  ``rank`` / ``world_size`` give each DDP process a disjoint shard.  Re-iterable:
    iterating twice in one epoch gives the same batches.
    """

    def __init__(
        self,
        dataset: ImageSet,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: expected >= 1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank={rank} is outside world_size={world_size}")
        self.dataset, self.batch_size, self.train = dataset, batch_size, train
        self.device, self.seed = torch.device(device), seed
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.epoch = 0
        c = len(dataset.mean)
        std = torch.tensor(dataset.std, dtype=torch.float32)
        self._scale = (1 / (255 * std)).view(1, c, 1, 1).to(self.device)
        self._shift = (-torch.tensor(dataset.mean) / std).view(1, c, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle and augmentation draws of ``epoch`` for the next iterations."""
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in batch order (CPU int64).

        All ranks shuffle alike and take every ``world_size``-th sample from ``rank``; with
        ``drop_last`` the data set is first cut to a multiple of ``world_size`` so all ranks
        get as many samples, without it shard sizes differ by at most one (exact evaluation).
        """
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.drop_last:
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.dataset)
        n = n // self.world_size if self.drop_last else len(range(self.rank, n, self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self) -> list[torch.Tensor]:
        idx = self.indices()
        return [idx[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        x = x.to(self.device, non_blocking=True).float().mul_(self._scale).add_(self._shift)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt), y.to(self.device, non_blocking=True).long()

    def __iter__(self) -> Iterator[Batch]:
        if isinstance(self.dataset, TensorImages):
            return self._iter_tensor(self.dataset)
        return self._iter_folder(self.dataset)

    def _iter_tensor(self, ds: TensorImages) -> Iterator[Batch]:
        images, labels = ds.on(self.device)
        augment = self.train and ds.augment
        g = None
        if augment:
            g = torch.Generator(device=self.device)
            g.manual_seed(mix_seed(self.seed, self.epoch, self.rank, 1))
        for idx in self._batches():
            idx = idx.to(self.device)
            x = images[idx]
            if augment:
                x = random_crop_flip(x, ds.pad, ds.hflip, g)
            yield self._finish(x, labels[idx])

    def _iter_folder(self, ds: FolderImages) -> Iterator[Batch]:
        transform = folder_transform(ds.image_size, train=self.train and ds.augment)
        loader = DataLoader(
            FolderDataset(ds, transform, seed=mix_seed(self.seed, self.epoch, 2)),
            batch_sampler=[b.tolist() for b in self._batches()],
            num_workers=ds.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield self._finish(x, y)


make_loader = Loader
