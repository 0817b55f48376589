"""A fixed, ordered set of images served to a device in batches.

The proxy scorer of MetaPruning (Liu et al., ICCV 2019, sec. 3.3) recalibrates every candidate on
the same training batches and scores it on the same held-out images, thousands of times over.
The paper does not say how those images reach the GPU; here a set is held once, either

* **resident**: normalised float32 on the device in the network's memory format, ready to be
  sliced (fastest; what a small split such as Fashion-MNIST's or CIFAR-10's can afford), or
* **streamed**: in its stored dtype (uint8 for every data set here) in host memory, pinned when
  the device is CUDA, copied batch by batch with non-blocking copies on a side stream one batch
  ahead of the compute, and normalised on the device; the device then holds only the batch in
  use and the next one (50k ImageNet images at 224 px: 7.5 GB of uint8 on the host instead of
  30 GB of float32 on the device).

Either way a batch holds the same values (the loaders' float ops on the same stored pixels), so
what is computed from it does not depend on the choice.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from metaprune.data.folder import FolderDataset, folder_transform
from metaprune.data.images import DataError, ImageSet, TensorImages, mix_seed
from metaprune.data.loader import random_crop_flip

Batch = tuple[torch.Tensor, "torch.Tensor | None"]
Span = tuple[int, int]


def float_bytes(n: int, shape: Sequence[int]) -> int:
    """Bytes of ``n`` images of ``shape`` (C, H, W) as float32: what a resident set holds."""
    return 4 * n * int(np.prod(shape))


def device_of(device: torch.device | str) -> torch.device:
    """``device`` with its index (``cuda`` is the current CUDA device), to compare devices."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _spans(start: int, end: int, batch_size: int) -> list[Span]:
    return [(s, min(s + batch_size, end)) for s in range(start, end, batch_size)]


class ImageFeed:
    """``images`` (N, C, H, W) and ``labels`` (N,) (or ``None``) served to ``device`` in batches.

    ``images`` are uint8 pixels normalised on the device with the data set's ``mean``/``std``
    (as the loaders do), or, with ``mean=None``, float images already normalised.
    ``batch_size`` is an int (batches of that size, the last one partial) or the list of batch
    sizes.  ``resident=True`` keeps the normalised images on the device; ``False`` streams them
    from host memory (module docstring).  Iterating yields ``(x float32, y int64 or None)`` on
    ``device``; ``feed[i:j]`` is the feed of batches ``i`` to ``j`` (no copy); :meth:`between`
    serves any range of images.  Re-iterable, and safe to iterate from several threads.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        batch_size: int | Sequence[int],
        device: torch.device | str = "cpu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = False,
        resident: bool = True,
    ) -> None:
        n = len(images)
        if images.dim() != 4 or n == 0:
            raise DataError(f"ImageFeed needs a non-empty (N, C, H, W) batch, got {images.shape}")
        if labels is not None and len(labels) != n:
            raise DataError(f"ImageFeed got {n} images but {len(labels)} labels")
        if (mean is None) != (std is None):
            raise DataError("ImageFeed needs both mean and std, or neither")
        if mean is not None and images.dtype != torch.uint8:
            raise DataError(f"ImageFeed normalises uint8 pixels, got {images.dtype}")
        if mean is None and not images.is_floating_point():
            raise DataError(f"ImageFeed got {images.dtype} images without mean/std")
        if isinstance(batch_size, int):
            if batch_size < 1:
                raise DataError(f"ImageFeed batch_size={batch_size}: expected >= 1")
            self.spans = _spans(0, n, batch_size)
        else:
            ends = np.cumsum([0, *batch_size]).tolist()
            if ends[-1] != n or min(batch_size, default=0) < 1:
                raise DataError(f"ImageFeed batch sizes {list(batch_size)} do not cut {n} images")
            self.spans = list(itertools.pairwise(ends))
        self.device = device_of(device)
        self.shape = tuple(int(s) for s in images.shape[1:])
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self._scale = self._shift = None
        if mean is not None and std is not None:
            c = self.shape[0]
            sd = torch.tensor(std, dtype=torch.float32)
            self._scale = (1 / (255 * sd)).view(1, c, 1, 1).to(self.device)
            self._shift = (-torch.tensor(mean) / sd).view(1, c, 1, 1).to(self.device)
        self.labels = None if labels is None else labels.to(self.device).long()
        self.resident = resident
        self._host: torch.Tensor | None = None
        self._dev: torch.Tensor | None = None
        if resident:  # one float copy on the device, filled batch by batch
            self._dev = torch.empty((n, *self.shape), device=self.device, memory_format=self.format)
            for s, e in _spans(0, n, 1024):
                self._dev[s:e] = self._finish(images[s:e].to(self.device))
        else:
            host = images.to("cpu").contiguous()
            pin = self.device.type == "cuda" and not host.is_pinned()
            self._host = host.pin_memory() if pin else host

    @classmethod
    def from_batches(
        cls,
        batches: Sequence[Batch],
        *,
        device: torch.device | str | None = None,
        channels_last: bool = False,
        resident: bool = True,
    ) -> ImageFeed:
        """The feed of a list of ``(x normalised float, y or None)`` batches, batch for batch
        (``device``: that of the first batch)."""
        if not batches:
            raise DataError("ImageFeed.from_batches got no batches")
        xs = [x for x, _ in batches]
        ys = [y for _, y in batches]
        return cls(
            torch.cat(xs),
            None if any(y is None for y in ys) else torch.cat(ys),
            batch_size=[len(x) for x in xs],
            device=xs[0].device if device is None else device,
            channels_last=channels_last,
            resident=resident,
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: ImageSet,
        indices: torch.Tensor,
        batch_size: int,
        *,
        augment: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        resident: bool = True,
    ) -> ImageFeed:
        """The images of ``dataset`` at ``indices``, in that order, in batches of
        ``batch_size``; with ``augment`` (and the data set's augmentation on) each batch is
        augmented as a training loader of ``seed`` on the CPU augments its first batches."""
        device = torch.device(device)
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        augment = augment and dataset.augment
        n, shape = len(idx), dataset.input_shape
        pin = device.type == "cuda" and not resident
        host = torch.empty((n, *shape), dtype=torch.uint8, pin_memory=pin)
        spans = _spans(0, n, batch_size)
        if isinstance(dataset, TensorImages):
            g = torch.Generator().manual_seed(mix_seed(seed, 0, 0, 1))
            for s, e in spans:
                x = dataset.images[idx[s:e]]
                host[s:e] = random_crop_flip(x, dataset.pad, dataset.hflip, g) if augment else x
        else:
            decoded = DataLoader(
                FolderDataset(
                    dataset, folder_transform(dataset.image_size, augment), mix_seed(seed, 0, 2)
                ),
                batch_sampler=[idx[s:e].tolist() for s, e in spans],
                num_workers=dataset.num_workers,
            )
            for (s, e), (x, _) in zip(spans, decoded, strict=True):
                host[s:e] = x
        return cls(
            host,
            dataset.labels[idx],
            batch_size=batch_size,
            device=device,
            mean=dataset.mean,
            std=dataset.std,
            channels_last=channels_last,
            resident=resident,
        )

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.spans)

    @property
    def num_images(self) -> int:
        return len(self._dev if self._dev is not None else self._host)

    def __getitem__(self, batches: slice) -> ImageFeed:
        if not isinstance(batches, slice):
            raise TypeError(f"an ImageFeed is sliced by batches, got {batches!r}")
        view = copy.copy(self)
        view.spans = self.spans[batches]
        return view

    def __iter__(self) -> Iterator[Batch]:
        return self._serve(self.spans)

    def between(self, start: int, end: int, batch_size: int) -> Iterator[Batch]:
        """Images ``[start, end)`` in batches of ``batch_size``."""
        if not 0 <= start <= end <= self.num_images:
            raise DataError(f"images [{start}, {end}) outside a feed of {self.num_images}")
        return self._serve(_spans(start, end, batch_size))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels on the device -> normalised float32 in the feed's memory format."""
        if self._scale is not None:
            x = x.float().mul_(self._scale).add_(self._shift)
        return x.contiguous(memory_format=self.format)

    def _label(self, s: int, e: int) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[s:e]

    def _serve(self, spans: Sequence[Span]) -> Iterator[Batch]:
        if self._dev is not None:
            for s, e in spans:
                yield self._dev[s:e], self._label(s, e)
            return
        assert self._host is not None
        host = self._host
        if self.device.type != "cuda":
            for s, e in spans:
                yield self._finish(host[s:e].to(self.device)), self._label(s, e)
            return
        main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(self.device)

        def load(span: Span) -> torch.Tensor:
            with torch.cuda.stream(side):
                return host[span[0] : span[1]].to(self.device, non_blocking=True)

        ahead = load(spans[0]) if spans else None
        for i, (s, e) in enumerate(spans):
            main.wait_stream(side)
            x = ahead
            assert x is not None
            x.record_stream(main)  # allocated on the side stream, used on the main one
            ahead = load(spans[i + 1]) if i + 1 < len(spans) else None
            yield self._finish(x), self._label(s, e)
