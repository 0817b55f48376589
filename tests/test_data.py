"""Data sets, splits and the device-side loader (metaprune.data)."""

from __future__ import annotations

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg, read_file

from metaprune.data import (
    DataConfig,
    DataError,
    as_data_config,
    balanced_subset,
    build_datasets,
    make_loader,
    random_crop_flip,
    split_train_search,
)
from metaprune.data import cifar as cifar_module
from metaprune.data import fashion_mnist as fashion_mnist_module
from metaprune.groups import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def fake(**kw) -> DataConfig:
    opts = {"name": "fake", "fake_size": 200, "fake_test_size": 40, "image_size": 8}
    return DataConfig(**{**opts, **kw})


def _assert_split(train: np.ndarray, search: np.ndarray, n: int, k: int) -> None:
    assert len(search) == k and len(train) == n - k
    assert np.intersect1d(train, search).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, search])), np.arange(n))


# ---------------------------------------------------------------- splits


def test_split_disjoint_deterministic_balanced():
    labels = torch.arange(1000) % 10
    train, search = split_train_search(labels, 0.1, seed=0)
    _assert_split(train, search, 1000, 100)
    assert np.bincount(labels.numpy()[search]).tolist() == [10] * 10
    again = split_train_search(labels, 0.1, seed=0)
    assert np.array_equal(again[1], search)
    assert not np.array_equal(split_train_search(labels, 0.1, seed=1)[1], search)
    train, search = split_train_search(labels, 37, seed=0)  # a count, not a fraction
    _assert_split(train, search, 1000, 37)
    assert np.ptp(np.bincount(labels.numpy()[search])) <= 1


def test_balanced_subset_with_scarce_class():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 50)
    idx = balanced_subset(labels, 21, np.random.default_rng(0))
    assert len(set(idx.tolist())) == 21
    assert np.bincount(labels[idx]).tolist() == [9, 3, 9]


def test_fake_datasets_splits_and_limits():
    d = build_datasets(fake(search_size=0.25))
    assert (len(d.train), len(d.search), len(d.test)) == (150, 50, 40)
    assert d.input_shape == (3, 8, 8) and d.num_classes == 10
    again = build_datasets(fake(search_size=0.25))
    for a, b in ((d.train, again.train), (d.search, again.search), (d.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # every image of the official train set lands in exactly one of train / search
    rows = {tuple(x.flatten().tolist()) for x in d.train.images}
    assert not rows & {tuple(x.flatten().tolist()) for x in d.search.images}
    other = build_datasets(fake(search_size=0.25, split_seed=1))
    assert not torch.equal(other.search.images, d.search.images)

    small = build_datasets(fake(search_size=0.25, train_limit=60, search_limit=20, test_limit=10))
    assert (len(small.train), len(small.search), len(small.test)) == (60, 20, 10)
    assert torch.bincount(small.train.labels).tolist() == [6] * 10
    assert {tuple(x.flatten().tolist()) for x in small.train.images} <= rows


def test_fake_one_channel_small_size():
    d = build_datasets(fake(fake_channels=1, image_size=12, fake_classes=3))
    x, y = next(iter(make_loader(d.train, 16, train=True)))
    assert x.shape == (16, 1, 12, 12) and y.max() < 3
    assert d.input_shape == (1, 12, 12)


def test_bad_config_errors():
    with pytest.raises(DataError, match="unknown data set"):
        build_datasets({"name": "mnist"})
    with pytest.raises(ConfigError, match=r"data\.bogus"):
        build_datasets({"name": "fake", "bogus": 1})
    with pytest.raises(DataError, match="search_size"):
        build_datasets(fake(search_size=200))
    with pytest.raises(DataError, match="search_size"):
        build_datasets(fake(search_size=2.5))
    with pytest.raises(DataError, match="image_size"):
        build_datasets({"name": "fashion_mnist", "image_size": 64})
    with pytest.raises(DataError, match=r"needs data\.root"):
        build_datasets({"name": "imagefolder"})


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ({"train_limit": 0}, DataError, r"data\.train_limit=0"),
        ({"search_size": -0.1}, DataError, r"data\.search_size=-0\.1"),
        ({"fake_channels": 2}, DataError, r"data\.fake_channels"),
        ({"num_workers": -1}, DataError, r"data\.num_workers=-1"),
        ({"image_size": 2}, DataError, r"data\.image_size=2"),
        ({"fake_size": "many"}, ConfigError, r"data\.fake_size: Value 'many'"),
    ],
)
def test_data_config_is_checked_without_reading_data(bad, error, match):
    with pytest.raises(error, match=match):
        as_data_config({"name": "fake", **bad})
    assert as_data_config({"name": "fake", "fake_size": "64"}).fake_size == 64  # typed


# ---------------------------------------------------------------- loader


def test_eval_loader_normalises_in_order():
    d = build_datasets(fake())
    loader = make_loader(d.test, 16, train=False)
    assert len(loader) == 3 and not loader.drop_last
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 8]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (d.test.images.float() / 255 - 0.5) / 0.23
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, d.test.labels)


def test_train_loader_shuffles_augments_deterministically():
    d = build_datasets(fake(fake_size=100, search_size=0))
    loader = make_loader(d.train, 32, train=True, seed=3)
    assert len(loader) == 3 and loader.drop_last
    first = list(loader)
    assert len(first) == 3 and all(x.shape == (32, 3, 8, 8) for x, _ in first)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, loader, strict=True))  # re-iterable
    loader.set_epoch(1)
    assert not torch.equal(first[0][1], next(iter(loader))[1])
    loader.set_epoch(0)
    assert torch.equal(first[0][0], next(iter(loader))[0])
    # augmented batches differ from the plain images of the same indices
    plain = make_loader(d.train, 32, train=False)
    idx = loader.indices()[:32]
    raw = (d.train.images[idx].float() / 255 - 0.5) / 0.23
    assert not torch.equal(first[0][0], raw)
    assert torch.equal(first[0][1], d.train.labels[idx])
    assert next(iter(plain))[0].shape == first[0][0].shape


def test_augment_off_gives_plain_images():
    d = build_datasets(fake(fake_size=64, search_size=0, augment=False))
    loader = make_loader(d.train, 16, train=True)
    x, _ = next(iter(loader))
    raw = (d.train.images[loader.indices()[:16]].float() / 255 - 0.5) / 0.23
    torch.testing.assert_close(x, raw)


def test_random_crop_flip_is_a_shifted_window():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 6, 6), dtype=torch.uint8, generator=g)
    assert torch.equal(random_crop_flip(x, 0, False, g), x)
    out = random_crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        windows = [
            w
            for dy in range(5)
            for dx in range(5)
            for w in (padded[i, :, dy : dy + 6, dx : dx + 6],)
        ]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 10 < flips < 54  # both flipped and unflipped images occur


@pytest.mark.parametrize("train", [True, False])
def test_ddp_shards_are_disjoint(train):
    d = build_datasets(fake(fake_size=103, search_size=0))
    shards = [
        make_loader(d.train, 8, train=train, rank=r, world_size=3, seed=5).indices()
        for r in range(3)
    ]
    flat = torch.cat(shards)
    assert len(set(flat.tolist())) == len(flat)
    if train:  # cut to a multiple of world_size: every rank as many samples
        assert [len(s) for s in shards] == [34, 34, 34]
    else:  # evaluation covers every sample once
        assert sorted(flat.tolist()) == list(range(103))
    loaders = [make_loader(d.train, 8, train=train, rank=r, world_size=3) for r in range(3)]
    batches = [list(loader) for loader in loaders]
    assert [len(b) for b in batches] == [len(loader) for loader in loaders]
    assert [len(b) for b in batches] == ([4, 4, 4] if train else [5, 5, 5])
    assert sum(len(y) for b in batches for _, y in b) == (96 if train else 103)
    with pytest.raises(DataError, match="rank"):
        make_loader(d.train, 8, train=train, rank=3, world_size=3)


def test_channels_last():
    d = build_datasets(fake())
    x, _ = next(iter(make_loader(d.train, 8, train=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(make_loader(d.train, 8, train=True)))
    assert x.is_contiguous()


# ---------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    header = (magic or 0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fmnist_dir(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, m in (("train", n), ("t10k", n // 2)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (m, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(m) % 10)
    return root


def test_fashion_mnist_idx_files(tmp_path):
    root = _fmnist_dir(tmp_path / "fm")
    d = build_datasets({"name": "fashion_mnist", "root": str(root), "search_size": 0.5})
    assert (len(d.train), len(d.search), len(d.test)) == (10, 10, 10)
    assert d.input_shape == (1, 28, 28) and d.train.images.dtype == torch.uint8
    # torchvision's layout, uncompressed
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in root.iterdir():
        (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    d2 = build_datasets({"name": "fashion_mnist", "root": str(tmp_path / "tv"), "search_size": 0.5})
    assert torch.equal(d2.search.images, d.search.images)


@pytest.mark.parametrize("damage", ["truncate", "magic", "gzip"])
def test_corrupt_idx_names_the_file(tmp_path, damage):
    root = _fmnist_dir(tmp_path)
    bad = root / "train-images-idx3-ubyte.gz"
    if damage == "truncate":
        raw = gzip.decompress(bad.read_bytes())
        bad.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "magic":
        _write_idx(bad, np.zeros((20, 28, 28)), magic=0x0901)
    else:
        bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        build_datasets({"name": "fashion_mnist", "root": str(root)})


def test_missing_root_names_path_and_remedy(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere") as e:
        build_datasets({"name": "fashion_mnist", "root": str(nowhere)})
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    assert "data.download=true" in str(e.value)
    with pytest.raises(DataError, match="nowhere") as e:
        build_datasets({"name": "cifar10", "root": str(nowhere)})
    assert "cifar10-jpeg" in str(e.value)
    with pytest.raises(DataError, match="nowhere"):
        build_datasets({"name": "imagefolder", "root": str(nowhere)})


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("no route to host")

    monkeypatch.setattr(fashion_mnist_module, "download_fashion_mnist", offline)
    with pytest.raises(DataError, match=r"downloading fashion_mnist into .*no route to host"):
        build_datasets({"name": "fashion_mnist", "root": str(tmp_path), "download": True})
    got = []
    monkeypatch.setattr(fashion_mnist_module, "download_fashion_mnist", got.append)
    with pytest.raises(DataError, match="not found"):  # nothing appeared where it downloaded
        build_datasets({"name": "fashion_mnist", "root": str(tmp_path), "download": True})
    assert got == [tmp_path]


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_splits():
    cfg = {"name": "fashion_mnist", "test_limit": 500}
    d = build_datasets(cfg)
    assert (len(d.train), len(d.search), len(d.test)) == (54000, 6000, 500)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert torch.bincount(d.search.labels).tolist() == [600] * 10
    train_idx, search_idx = split_train_search(
        torch.cat([d.train.labels, d.search.labels]).sort().values, 0.1, 0
    )
    _assert_split(train_idx, search_idx, 60000, 6000)
    again = build_datasets(cfg)
    assert torch.equal(again.search.images, d.search.images)
    x, _ = next(iter(make_loader(d.test, 500, train=False)))
    assert abs(x.mean().item()) < 0.15 and abs(x.std().item() - 1) < 0.15


# ---------------------------------------------------------------- CIFAR-10 layouts


def _jpeg_tree(root: Path, classes=("cat", "dog", "ship"), per_class=(4, 2)) -> dict:
    g = torch.Generator().manual_seed(0)
    written = {}
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=g)
                path = folder / f"{i:04d}.jpg"
                path.write_bytes(encode_jpeg(img, quality=90).numpy().tobytes())
                written[path] = decode_jpeg(read_file(str(path)))
    return written


def test_cifar_jpeg_folder_decoded_once_and_cached(tmp_path, monkeypatch):
    written = _jpeg_tree(tmp_path / "cifar10-jpeg")
    cfg = {"name": "cifar10", "root": str(tmp_path), "search_size": 3}
    d = build_datasets(cfg)
    assert (len(d.train), len(d.search), len(d.test)) == (9, 3, 6)
    assert d.classes == ["cat", "dog", "ship"] and d.input_shape == (3, 8, 8)
    cache = tmp_path / "cifar10-jpeg" / "train.uint8.pt"
    assert cache.is_file() and (tmp_path / "cifar10-jpeg" / "test.uint8.pt").is_file()
    test = d.test.images
    expected = [
        written[tmp_path / "cifar10-jpeg" / "test" / c / f"{i:04d}.jpg"]
        for c in ("cat", "dog", "ship")
        for i in range(2)
    ]
    assert torch.equal(test, torch.stack(expected))
    assert d.test.labels.tolist() == [0, 0, 1, 1, 2, 2]

    def no_decode(paths):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(cifar_module, "_decode", no_decode)
    again = build_datasets(cfg)
    assert torch.equal(again.test.images, test)
    assert torch.equal(again.search.images, d.search.images)
    # a new image makes the cache stale: it is decoded again
    extra = tmp_path / "cifar10-jpeg" / "test" / "dog" / "0009.jpg"
    extra.write_bytes((tmp_path / "cifar10-jpeg" / "test" / "cat" / "0000.jpg").read_bytes())
    with pytest.raises(AssertionError, match="decoded again"):
        build_datasets(cfg)


def test_cifar_jpeg_folder_directly_under_root_and_bad_jpeg(tmp_path):
    _jpeg_tree(tmp_path)
    d = build_datasets({"name": "cifar10", "root": str(tmp_path), "search_size": 0})
    assert len(d.train) == 12 and len(d.search) == 0
    bad = tmp_path / "test" / "dog" / "0001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        build_datasets({"name": "cifar10", "root": str(tmp_path)})


class _Touch:
    """Unpickles into ``os.system("touch <path>")``: what a crafted batch file would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def _write_cifar_pickles(folder: Path, dumps) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (10, 3072)).astype(np.uint8),
            b"labels": list(range(10)),
            b"filenames": [f"{i}.png".encode() for i in range(10)],
        }
        (folder / name).write_bytes(dumps(batch))


def test_cifar_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_pickles(folder, pickle.dumps)
    d = build_datasets({"name": "cifar10", "root": str(tmp_path)})
    assert (len(d.train), len(d.search), len(d.test)) == (45, 5, 10)
    assert d.input_shape == (3, 32, 32) and d.classes[0] == "airplane"
    x, _ = next(iter(make_loader(d.train, 16, train=True)))
    assert x.shape == (16, 3, 32, 32)
    (folder / "data_batch_3").write_bytes(b"\x80garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        build_datasets({"name": "cifar10", "root": str(tmp_path)})
    # a plain-data batch whose values are no pixels or labels (a bare ValueError / TypeError)
    for data, labels in ((["x"] * 3, [0, 1, 2]), ({"a": 1}, [0]), (b"abc", "oops")):
        batch = {b"data": data, b"labels": labels}
        (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
        with pytest.raises(DataError, match="data_batch_3 holds no uint8 pixels"):
            build_datasets({"name": "cifar10", "root": str(tmp_path)})


def test_cifar_batches_the_original_way_load(tmp_path):
    # the original batches are Python 2 pickles (protocol 2) of numpy 1.x: numpy.core names
    def py2_numpy1(batch) -> bytes:
        return pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")

    _write_cifar_pickles(tmp_path / "cifar-10-batches-py", py2_numpy1)
    raw = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    d = build_datasets({"name": "cifar10", "root": str(tmp_path), "search_size": 0})
    assert (len(d.train), len(d.test)) == (50, 10) and d.train.images.dtype == torch.uint8


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batch_that_runs_code_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    _write_cifar_pickles(tmp_path / "cifar-10-batches-py", pickle.dumps)
    evil = {b"data": _Touch(marker), b"labels": [0]}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(cifar_module.UnsafePickleError, match=r"data_batch_2.*refusing global"):
        build_datasets({"name": "cifar10", "root": str(tmp_path)})
    assert not marker.exists()
    # a codec other than latin1 through _codecs.encode is refused too
    path.write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(cifar_module.UnsafePickleError, match="rot13"):
        build_datasets({"name": "cifar10", "root": str(tmp_path)})


# ---------------------------------------------------------------- ImageFolder


def test_imagefolder_loader(tmp_path):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 5), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=g)
                (tmp_path / split / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    cfg = {
        "name": "imagefolder",
        "root": str(tmp_path),
        "image_size": 16,
        "num_workers": 0,
        "search_size": 2,
    }
    d = build_datasets(cfg)
    assert (len(d.train), len(d.search), len(d.test)) == (8, 2, 4)
    assert d.input_shape == (3, 16, 16) and d.num_classes == 2
    train = make_loader(d.train, 4, train=True)
    batches = list(train)
    assert len(batches) == len(train) == 2
    assert all(x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 for x, _ in batches)
    y = torch.cat([make_loader(d.test, 3, train=False).__iter__().__next__()[1]])
    assert y.tolist() == [0, 0, 1]
    assert torch.equal(next(iter(train))[0], batches[0][0])  # same epoch, same augmentation


@pytest.mark.slow
@pytest.mark.skipif(
    cifar_module.find_layout(Path("data/cifar10")) is None, reason="no data/cifar10"
)
def test_real_cifar10_splits():
    d = build_datasets({"name": "cifar10", "root": "data/cifar10"})
    assert (len(d.train), len(d.search), len(d.test)) == (45000, 5000, 10000)
    assert d.input_shape == (3, 32, 32) and d.classes == cifar_module.CLASSES
    assert torch.bincount(d.search.labels).tolist() == [500] * 10
    x = torch.cat([x for x, _ in make_loader(d.test, 2000, train=False)])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1
