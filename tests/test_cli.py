"""The ``metaprune`` command line (metaprune.cli): usage, start-up checks, run-directory lock."""

from __future__ import annotations

import json
import os
import sys

import pytest

from metaprune import cli
from metaprune.cli import main
from metaprune.io import LOCK_FILE, run_lock


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
    with run_lock(tmp_path, "metaprune pipeline"), pytest.raises(SystemExit):
        main(["train", "experiment=tiny", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "metaprune pipeline" in err
    assert not (tmp_path / "train").exists()  # nothing ran


def test_a_command_holds_the_lock_while_it_runs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setitem(
        cli._COMMANDS, "search", lambda cfg: seen.append((tmp_path / LOCK_FILE).read_text())
    )
    main(["search", "experiment=tiny", f"run_dir={tmp_path}"])
    assert len(seen) == 1 and json.loads(seen[0])["command"] == "metaprune search"
    assert not (tmp_path / LOCK_FILE).exists()
