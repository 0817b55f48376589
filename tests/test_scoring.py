"""The proxy scorer's inputs and footprint: recalibration batches (clean or augmented, always
class-mixed), image feeds (resident or streamed from host memory), no side effects on the
caller's PruningNet, and the public names a notebook needs."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from metaprune.data import TensorImages, make_loader
from metaprune.data.feed import ImageFeed
from metaprune.data.images import DataError
from metaprune.data.recalib import recalibration_batches


def sorted_images(n: int = 96, classes: int = 4, size: int = 8, seed: int = 0) -> TensorImages:
    """A training split stored class by class (as CIFAR-10's and Fashion-MNIST's are)."""
    g = torch.Generator().manual_seed(seed)
    return TensorImages(
        images=torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        labels=torch.arange(n) * classes // n,
        classes=[f"c{i}" for i in range(classes)],
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        pad=2,
    )


# -- recalibration batches ------------------------------------------------------------------------
def test_augmented_recalibration_is_the_training_loaders_first_batches():
    ds = sorted_images()
    feed = recalibration_batches(ds, 3, 16, augment=True, seed=5)
    loader = make_loader(ds, 16, train=True, seed=5)
    assert len(feed) == 3
    for (x, y), (lx, ly) in zip(feed, itertools.islice(loader, 3), strict=True):
        assert torch.equal(x, lx) and torch.equal(y, ly)


def test_clean_recalibration_is_a_shuffled_class_mixed_draw():
    ds = sorted_images()
    clean = recalibration_batches(ds, 3, 16, augment=False, seed=5)
    augmented = recalibration_batches(ds, 3, 16, augment=True, seed=5)
    (x, y), (xa, ya) = next(iter(clean)), next(iter(augmented))
    assert len(torch.unique(y)) >= 3  # the unshuffled first 16 images are all of class 0
    assert torch.equal(y, ya) and not torch.equal(x, xa)  # same images, not augmented
    plain = make_loader(ds, len(ds), train=False)  # normalised, in storage order
    xs, ys = next(iter(plain))
    order = make_loader(ds, 16, train=True, seed=5).indices()[:16]
    assert torch.equal(x, xs[order]) and torch.equal(y, ys[order])
    # a data set with augmentation off is never augmented
    off = recalibration_batches(TensorImages(**{**vars(ds), "augment": False}), 3, 16, seed=5)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(off, clean, strict=True))


def test_recalibration_needs_enough_images():
    with pytest.raises(DataError, match="need 128 images; the split has 96"):
        recalibration_batches(sorted_images(), 8, 16)
    with pytest.raises(DataError, match="batches >= 1"):
        recalibration_batches(sorted_images(), 0, 16)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_recalibration_from_an_image_folder_is_the_loaders_draw(tmp_path):
    from torchvision.io import encode_jpeg

    from metaprune.data import build_datasets

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 1)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=g)
                (tmp_path / split / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16, "num_workers": 0}
    train = build_datasets({**cfg, "search_size": 2}).train
    for augment in (True, False):  # as a CPU training loader draws, with or without its crops
        feed = recalibration_batches(train, 2, 4, augment=augment, seed=3)
        loader = make_loader(replace(train, augment=augment), 4, train=True, seed=3)
        for (x, y), (lx, ly) in zip(feed, itertools.islice(loader, 2), strict=True):
            assert torch.equal(x, lx) and torch.equal(y, ly)


# -- image feeds ----------------------------------------------------------------------------------
def test_feed_resident_and_streamed_serve_the_same_batches():
    ds = sorted_images()
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    kw = {"channels_last": True, "augment": False}
    resident = ImageFeed.from_dataset(ds, idx, 20, resident=True, **kw)
    streamed = ImageFeed.from_dataset(ds, idx, 20, resident=False, **kw)
    assert streamed._host.dtype == torch.uint8 and streamed._dev is None
    assert resident._host is None and resident._dev.dtype == torch.float32
    assert len(resident) == len(streamed) == 5 and resident.num_images == 96
    for (a, ya), (b, yb) in zip(resident, streamed, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
        assert b.is_contiguous(memory_format=torch.channels_last)
    for feed in (resident, streamed):
        sizes = [len(y) for _, y in feed.between(10, 55, 16)]
        assert sizes == [16, 16, 13]
        assert [len(y) for _, y in feed[3:]] == [20, 16]
    with pytest.raises(DataError, match="outside"):
        next(resident.between(0, 97, 8))


def test_feed_of_batches_keeps_their_sizes():
    xs = [torch.randn(5, 3, 4, 4), torch.randn(3, 3, 4, 4)]
    feed = ImageFeed.from_batches([(x, None) for x in xs])
    assert [x.shape[0] for x, _ in feed] == [5, 3]
    assert all(torch.equal(a, b) and y is None for (a, y), b in zip(feed, xs, strict=True))
    with pytest.raises(DataError, match="uint8"):
        ImageFeed(xs[0], batch_size=2, mean=(0.5,) * 3, std=(0.2,) * 3)


# -- the proxy scorer ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts():
    """A tiny PruningNet (in training mode, as a training loop leaves it) and fake data."""
    from metaprune import create_space
    from metaprune.data import DataConfig, build_datasets
    from metaprune.pruningnet import create_pruningnet

    data = build_datasets(
        DataConfig(name="fake", fake_size=200, fake_classes=4, image_size=8, search_size=0.4)
    )
    sp = create_space("resnet20", width_mult=0.25, input_size=8, num_classes=4)
    torch.manual_seed(0)
    pnet = create_pruningnet(sp).train()
    configs = [sp.sample(np.random.default_rng(i)) for i in range(3)]
    return pnet, data, [*configs, sp.max(), sp.min()]


def scorer_config(**kw):
    from metaprune.search import SearchConfig

    opts = {"recalib_batches": 4, "recalib_batch_size": 16, "racing_slice": 0.25, **kw}
    return SearchConfig.from_any({"scorer": opts}).scorer


def held_bytes(obj, skip) -> int:
    """Bytes of the distinct tensor storages reachable from ``obj``'s attributes (not through
    ``skip``)."""
    seen, storages = set(), {}

    def walk(o):
        if id(o) in seen or o is skip:
            return
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            storages[o.untyped_storage().data_ptr()] = o.untyped_storage().nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)
        elif hasattr(o, "__dict__"):
            walk(vars(o))

    walk(obj)
    return sum(storages.values())


def test_scorer_streams_a_split_larger_than_its_budget(parts):
    from metaprune.search import ProxyScorer

    pnet, data, configs = parts
    n_search, n_rec, pixels = len(data.search), 4 * 16, 3 * 8 * 8
    big = ProxyScorer.from_datasets(pnet, data, scorer_config(resident_mb=1))
    small = ProxyScorer.from_datasets(pnet, data, scorer_config(resident_mb=0.01))
    assert big.search.resident and not small.search.resident
    # streamed: the stored uint8 pixels once, the labels and the normalisation constants
    stored = (n_search + n_rec) * (pixels + 8)
    assert stored <= held_bytes(small, pnet) <= stored + 1024
    assert held_bytes(big, pnet) >= 4 * (n_search + n_rec) * pixels  # float32 on the device
    assert small.score(configs) == big.score(configs)
    for a, b in zip(small.last_correct, big.last_correct, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_recalib_augment_reaches_the_scorer(parts):
    from metaprune.search import ProxyScorer

    pnet, data, _ = parts
    for augment in (True, False):
        scorer = ProxyScorer.from_datasets(pnet, data, scorer_config(recalib_augment=augment))
        draw = recalibration_batches(data.train, 4, 16, augment=augment, seed=0)
        got = [x for x, _ in scorer.recalib]
        assert all(
            torch.equal(a, b.contiguous(memory_format=torch.channels_last))
            for a, (b, _) in zip(got, draw, strict=True)
        )
    assert not torch.equal(got[0], next(iter(recalibration_batches(data.train, 4, 16)))[0])


def test_scoring_leaves_the_callers_pruningnet_alone(parts):
    import copy

    from metaprune.search import ProxyScorer

    pnet, data, configs = parts
    before = {k: (v.clone(), v.stride()) for k, v in pnet.state_dict().items()}
    for stack in (1, 2):
        scorer = ProxyScorer.from_datasets(pnet, data, scorer_config(stack=stack))
        scorer.score(configs)
        scorer.network(configs[0])
    assert pnet.training and all(m.training for m in pnet.modules())
    after = pnet.state_dict()
    assert before.keys() == after.keys()
    for k, (v, stride) in before.items():
        assert torch.equal(after[k], v) and after[k].stride() == stride, k
    elsewhere = copy.deepcopy(pnet).to("meta")
    with pytest.raises(ValueError, match="PruningNet on meta: move them there first"):
        ProxyScorer.from_datasets(elsewhere, data, scorer_config())


def test_public_names_recalibrate_fold_and_evaluate_generated_weights(parts):
    """What a notebook calls on generated weights: recalibrated BN folded into the convs gives
    the same logits, and the public evaluation agrees with the scorer's."""
    from metaprune import build_pruned
    from metaprune.data import make_loader
    from metaprune.data import recalibration_batches as draw
    from metaprune.engine import evaluate, fuse_bn, recalibrate_bn
    from metaprune.search.scoring import ProxyScorer

    pnet, data, configs = parts
    net = build_pruned(pnet.space, configs[0])
    net.load_state_dict(pnet.generate(configs[0]))
    recalibrate_bn(net, draw(data.train, 4, 16))
    x, y = next(iter(make_loader(data.search, len(data.search), train=False)))
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(fuse_bn(net)(x), ref, rtol=1e-4, atol=1e-4)
    scorer = ProxyScorer(pnet, draw(data.train, 4, 16), x, y, racing=False, channels_last=False)
    assert scorer.score(configs[:1])[0] == evaluate(net, [(x, y)])[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streamed_scoring_on_cuda_holds_batches_not_the_split():
    """On CUDA a streamed split is pinned on the host and the device holds a few batches: its
    peak memory while scoring stays far below the split as float32; the scores are those of
    the resident split."""
    from metaprune import create_space
    from metaprune.data import DataConfig, build_datasets
    from metaprune.pruningnet import create_pruningnet
    from metaprune.search import ProxyScorer

    data = build_datasets(
        DataConfig(name="fake", fake_size=8192, fake_classes=4, image_size=32, search_size=0.5)
    )
    sp = create_space("resnet20", width_mult=0.25, input_size=32, num_classes=4)
    torch.manual_seed(0)
    pnet = create_pruningnet(sp).cuda()
    configs = [sp.sample(np.random.default_rng(i)) for i in range(3)]
    opts = {"racing": False, "eval_batch_size": 256, "amp": False}
    resident = ProxyScorer.from_datasets(pnet, data, scorer_config(**opts), "cuda")
    expected = resident.score(configs)
    del resident
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    streamed = ProxyScorer.from_datasets(pnet, data, scorer_config(resident_mb=0, **opts), "cuda")
    assert streamed.search._host.is_pinned() and streamed.search._host.dtype == torch.uint8
    assert streamed.score(configs) == expected
    split = 4 * len(data.search) * 3 * 32 * 32  # 50 MB as float32
    assert torch.cuda.max_memory_allocated() - base < split / 4
