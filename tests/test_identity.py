"""Stage identity (metaprune.engine.identity): a changed input is named, never reused."""

from __future__ import annotations

import pytest

from metaprune.engine.identity import (
    StaleStageError,
    file_hash,
    identity_diff,
    require_identity,
)
from metaprune.io import CheckpointError


def test_diff_names_nested_and_missing_keys():
    a = {"train": {"epochs": 1, "lr": 0.1}, "data": {"name": "fake"}}
    b = {"train": {"epochs": 2, "lr": 0.1}, "data": {"name": "fake", "size": 10}}
    assert identity_diff(a, b) == ["data.size", "train.epochs"]
    assert identity_diff(a, a) == []
    # compared as the JSON they are stored as: a tuple of this run equals the stored list
    assert identity_diff({"choices": [0.5, 1.0]}, {"choices": (0.5, 1.0)}) == []


def test_require_identity_lists_values_and_how_to_start_fresh(tmp_path):
    where = tmp_path / "metrics.json"
    require_identity(where, {"x": 1}, {"x": 1}, "delete it")
    with pytest.raises(StaleStageError, match=r"x: 1 -> 2.*delete it") as e:
        require_identity(where, {"x": 1}, {"x": 2}, "delete it")
    assert str(where) in str(e.value)
    assert isinstance(e.value, CheckpointError)
    with pytest.raises(StaleStageError, match="records no stage identity"):
        require_identity(where, None, {"x": 1}, "delete it")


def test_file_hash_follows_content(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"a" * 3_000_000)
    h = file_hash(p, chunk=1000)
    assert h == file_hash(p)
    p.write_bytes(b"a" * 2_999_999 + b"b")
    assert file_hash(p) != h
