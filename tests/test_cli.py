"""The ``metaprune`` command line (metaprune.cli): usage, start-up checks, run-directory lock."""

from __future__ import annotations

import json
import os
import sys

import pytest

from metaprune import cli
from metaprune.cli import main
from metaprune.config import SupernetMismatchError, build_space, use_supernet
from metaprune.io import LOCK_FILE, run_lock
from metaprune.pruningnet import create_pruningnet, save_pruningnet
from metaprune.schema import load_config


def test_no_arguments_exits_2_with_usage_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and "usage: metaprune" in out.err


def test_help_exits_0_with_usage_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    assert "usage: metaprune" in capsys.readouterr().out


def test_second_command_into_a_locked_run_dir_fails_at_once(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with run_lock(tmp_path, "metaprune pipeline"), pytest.raises(SystemExit) as exc:
        main(["train", "experiment=tiny", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"pid {os.getpid()}" in err and "metaprune pipeline" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing ran, no .hydra/ record


def test_a_command_holds_the_lock_while_it_runs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setitem(
        cli._COMMANDS, "search", lambda cfg: seen.append((tmp_path / LOCK_FILE).read_text())
    )
    main(["search", "experiment=tiny", f"run_dir={tmp_path}"])
    assert len(seen) == 1 and json.loads(seen[0])["command"] == "metaprune search"
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.fixture
def tiny_supernet(tmp_path) -> str:
    """A (untrained) PruningNet of ``experiment=tiny``'s space, saved as training saves it."""
    cfg = load_config(["experiment=tiny"])
    space = build_space(cfg.model, cfg.space, (3, 12, 12), 10)
    return str(save_pruningnet(tmp_path / "pruningnet.pt", create_pruningnet(space)))


def test_supernet_of_another_space_fails_at_start_up(
    tiny_supernet: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    same = load_config(["experiment=tiny", f"supernet={tiny_supernet}"])
    assert use_supernet(same, tmp_path) == tiny_supernet == same.retrain.pruningnet
    other = load_config(["experiment=tiny", f"supernet={tiny_supernet}", "model=mobilenet_v2"])
    with pytest.raises(SupernetMismatchError, match=r"of resnet20 .*configure mobilenet_v2"):
        use_supernet(other, tmp_path)
    wider = load_config(["experiment=tiny", f"supernet={tiny_supernet}", "model.width_mult=0.5"])
    with pytest.raises(SupernetMismatchError, match=r"width_mult 0\.25 vs 0\.5"):
        use_supernet(wider, tmp_path)
    # the pipeline fails before it trains a PruningNet it would not use
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["pipeline", "experiment=tiny", f"supernet={tiny_supernet}", "model=mobilenet_v2",
              f"run_dir={run_dir}"])  # fmt: skip
    assert "SupernetMismatchError" in capsys.readouterr().err
    assert not (run_dir / "train").exists()


def test_a_typo_in_a_retrain_override_fails_before_training(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "experiment=tiny", "+retrain.train.epohcs=3", f"run_dir={tmp_path}"])
    assert exc.value.code == 2 and "retrain.train.epohcs" in capsys.readouterr().err
    assert not (tmp_path / "train").exists()
