"""Benchmark of the data package: load times and device-side vs per-image augmentation.

Reports, in one run: the time to load Fashion-MNIST from its IDX files, the time to decode a
CIFAR-10 JPEG folder (cache removed first with ``--decode``) and to load its cache, and images per
second of one training epoch's augmentation done by ``make_loader`` (batched tensor ops) against
the per-image torchvision transforms a DataLoader would run (RandomCrop(padding) + flip +
normalise), on the same images and device.

    python tools/bench_data.py --cifar-root data/cifar10 [--decode] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torchvision import transforms as T

from metaprune.data import DataConfig, build_datasets, make_loader
from metaprune.data.cifar import find_layout


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def per_image_epoch(images: torch.Tensor, mean, std, pad: int, batch: int) -> None:
    tf = T.Compose(
        [
            T.RandomCrop(images.shape[-1], padding=pad),
            T.RandomHorizontalFlip(),
            T.ConvertImageDtype(torch.float32),
            T.Normalize(mean, std),
        ]
    )
    for start in range(0, len(images), batch):
        torch.stack([tf(x) for x in images[start : start + batch]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-root", default="data/cifar10")
    ap.add_argument("--decode", action="store_true", help="remove the JPEG cache to time a decode")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=10_000, help="images per augmentation epoch")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    fm, t = timed(lambda: build_datasets(DataConfig(name="fashion_mnist")))
    print(
        f"fashion_mnist load + split: {t:.2f} s ({len(fm.train)}/{len(fm.search)}/{len(fm.test)})"
    )

    layout = find_layout(Path(args.cifar_root))
    if layout is not None and layout[0] == "jpeg" and args.decode:
        for split in ("train", "test"):
            (layout[1] / f"{split}.uint8.pt").unlink(missing_ok=True)
    if layout is not None:
        cfg = DataConfig(name="cifar10", root=args.cifar_root)
        _, t = timed(lambda: build_datasets(cfg))
        print(f"cifar10 ({layout[0]}) load{' with decode' if args.decode else ''}: {t:.2f} s")
        data, t = timed(lambda: build_datasets(cfg))
        print(f"cifar10 ({layout[0]}) load from cache: {t:.2f} s")
        train = data.train
    else:
        print(f"cifar10 not found under {args.cifar_root}: augmentation timed on fake data")
        train = build_datasets(DataConfig(name="fake", fake_size=args.images)).train
    train = train.subset(range(min(args.images, len(train))))

    loader = make_loader(train, args.batch, train=True, device=args.device)
    list(loader)  # copy to the device once, warm up
    _, t_dev = timed(lambda: [x.sum().item() for x, _ in loader])
    _, t_img = timed(
        lambda: per_image_epoch(train.images, train.mean, train.std, train.pad, args.batch)
    )
    fast, slow = len(loader) * args.batch / t_dev, len(train) / t_img
    print(
        f"augment+normalise on {args.device}: make_loader {fast:,.0f} img/s, per-image "
        f"torchvision {slow:,.0f} img/s, ratio {fast / slow:.1f}x"
    )


if __name__ == "__main__":
    main()
