"""Synthetic image sets for plumbing tests (never for an accuracy claim).

Like ``torchvision.datasets.FakeData`` but generated in one vectorised call and learnable: each
class has a random uint8 template and an image is its template plus uniform noise, so a tiny
network can fit it and a test can check that training lowers the loss.  Fully determined by the
seed.
"""

from __future__ import annotations

import torch

from metaprune.data.images import DataError, TensorImages


def make_fake(
    n: int, num_classes: int, channels: int, size: int, seed: int, noise: int = 64
) -> TensorImages:
    """``n`` images of ``channels`` x ``size`` x ``size`` in ``num_classes`` classes.

    Labels are balanced (``i % num_classes``, shuffled); a train and a test set are slices of one
    call, so that they share the class templates.
    """
    if n < 1 or num_classes < 2 or channels not in (1, 3) or size < 4:
        raise DataError(
            f"fake data needs n >= 1, >= 2 classes, 1 or 3 channels and size >= 4; "
            f"got n={n}, classes={num_classes}, channels={channels}, size={size}"
        )
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 256 - noise, (num_classes, channels, size, size), generator=g)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    images = templates[labels] + torch.randint(0, noise, (n, channels, size, size), generator=g)
    return TensorImages(
        images=images.to(torch.uint8),
        labels=labels,
        classes=[f"class{i}" for i in range(num_classes)],
        mean=(0.5,) * channels,
        std=(0.23,) * channels,  # templates U[0, 192) + noise U[0, 64)
        pad=max(1, size // 8),
    )
