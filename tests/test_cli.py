"""The ``metaprune`` command line (metaprune.cli): usage, start-up checks, run-directory lock."""

from __future__ import annotations

import pytest

from metaprune.cli import main


def test_no_arguments_exits_2_with_usage_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and "usage: metaprune" in out.err


def test_help_exits_0_with_usage_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    assert "usage: metaprune" in capsys.readouterr().out
