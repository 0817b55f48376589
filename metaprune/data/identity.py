"""What a run's data is, independent of where it lives: stage identities and split provenance.

MetaPruning (Liu et al., ICCV 2019, sec. 4) scores candidates on images held out of the
PruningNet's training set; the hold-out only means something if the search's images were never
trained on.  :func:`data_identity` is the part of the ``data`` config group that decides which
images a run sees (the data set, its split sizes and seeds, augmentation), without the folder it
was read from or how it was read (``root``, ``num_workers``, ``download``), so a moved data folder
is the same data.  :func:`split_identity` records the split a PruningNet was trained on, and
:func:`require_disjoint_search` refuses a search split that may share images with it.

Beyond the paper (a reliability rule of this project; DESIGN.md, "Reliability").  The check is by
construction, not by comparing indices: the ``train`` and ``search`` splits of one data set carved
with the same ``search_size`` and ``split_seed`` are disjoint (``split_train_search``); carved
with other values they almost surely overlap, and are refused without counting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig

from metaprune.data.datasets import DataConfig, as_data_config
from metaprune.data.images import DataError

EXECUTION_ONLY = ("root", "num_workers", "download")
"""Data options that change where or how the images are read, not which images they are."""
_APPLIES = {"image_size": ("imagefolder", "fake"), "fake_": ("fake",)}
_CARVING = ("search_size", "split_seed")


class SplitOverlapError(DataError):
    """A search split that may hold images the PruningNet was trained on."""


def _applies(key: str, name: str) -> bool:
    return all(name in names for prefix, names in _APPLIES.items() if key.startswith(prefix))


def data_identity(cfg: DataConfig | DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` options that decide which images a run sees, as plain JSON (options that do
    not apply to the data set, such as ``fake_size`` for CIFAR-10, are left out)."""
    d = as_data_config(cfg)
    return {k: v for k, v in asdict(d).items() if k not in EXECUTION_ONLY and _applies(k, d.name)}


def _source(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The official data set an identity's splits are carved from (name and image options)."""
    return {k: v for k, v in identity.items() if k == "name" or k.startswith(("image_", "fake_"))}


def split_identity(
    cfg: DataConfig | DictConfig | Mapping[str, Any], split: str, size: int
) -> dict[str, Any]:
    """The provenance of one split (``train``, ``search`` or ``test``) of ``cfg`` holding
    ``size`` images: its data set, how it was carved and its size."""
    ident = data_identity(cfg)
    return {
        "dataset": _source(ident),
        "split": split,
        **{k: ident[k] for k in _CARVING},
        "limit": ident[f"{split}_limit"],
        "size": size,
    }


def require_disjoint_search(
    trained_on: Mapping[str, Any] | None, cfg: DataConfig | DictConfig | Mapping[str, Any]
) -> None:
    """Raise :class:`SplitOverlapError` if the ``search`` split of ``cfg`` may share images with
    ``trained_on`` (a PruningNet's :func:`split_identity` of its ``train`` split).

    Another data set shares no images; the same data set is safe only when its search split is
    carved exactly as beside the training split (same ``search_size`` and ``split_seed``).
    ``None`` (a PruningNet trained on a loader of the caller's own) cannot be checked and passes.
    """
    if trained_on is None:
        return
    ident = data_identity(cfg)
    if trained_on.get("dataset") != _source(ident):
        return
    if trained_on.get("split") != "train":
        raise SplitOverlapError(
            f"the PruningNet was trained on the {trained_on.get('split')!r} split of "
            f"{ident['name']}, which this search's 'search' split may overlap"
        )
    diff = [k for k in _CARVING if trained_on.get(k) != ident[k]]
    if diff:
        was = " ".join(f"data.{k}={trained_on.get(k)}" for k in diff)
        now = " ".join(f"data.{k}={ident[k]}" for k in diff)
        raise SplitOverlapError(
            f"this search's 'search' split of {ident['name']} ({now}) is carved differently "
            f"from the one held out of the PruningNet's training images ({was}), so it may "
            f"contain images the PruningNet was trained on: search with {was}, or train a "
            "PruningNet for this split"
        )
