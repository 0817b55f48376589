"""The ``metaprune`` command: ``train``, ``search``, ``retrain``, ``pipeline``, ``prune`` are
Hydra apps.

``metaprune <command> [key=value ...]`` composes ``conf/config.yaml`` with the overrides (e.g.
``experiment=quickstart search.targets=[0.25,0.5]``); every command reads and writes the run
directory ``outputs/<run_name>`` (``train/``, ``search/``, ``retrain/<label>/``), so the commands
chain and a killed one resumes where it stopped.  A command holds the lock of its run directory
while it works (:func:`metaprune.io.run_lock`): a second one into the same directory fails at
once, naming the first one's pid and host.  ``metaprune latency build|validate`` measures
latency tables (plain argparse, see ``metaprune latency --help``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from metaprune.config import use_supernet
from metaprune.io import RunLockedError, run_lock
from metaprune.schema import CONF_DIR, check_config, load_config, register_configs

USAGE = """usage: metaprune {train,search,retrain,pipeline,prune} [key=value ...]
       metaprune latency {build,validate} [key=value | --key value ...]

  train     train a PruningNet by stochastic structure sampling       -> <run_dir>/train
  search    evolutionary search with the trained PruningNet           -> <run_dir>/search
  retrain   retrain a searched (or uniform) config from scratch        -> <run_dir>/retrain/<label>
  pipeline  train -> search -> retrain winners and baselines -> export -> summary
  prune     prune a trained network by a channel criterion, fine-tune  -> <run_dir>/prune/<label>
            (prune.from=<retrain run or .pt> prune.criterion=l1 prune.target=0.5)
  latency   build or validate a measured latency look-up table

Hydra overrides follow the command, e.g.  metaprune pipeline experiment=quickstart
Add --cfg job to print the composed configuration, --help for Hydra's help.
"""


def _run_train(cfg: DictConfig) -> None:
    from metaprune.train import train

    train(cfg, Path(cfg.run_dir) / "train")


def _run_search(cfg: DictConfig) -> None:
    from metaprune.search import search

    search(cfg, Path(cfg.run_dir) / "search", use_supernet(cfg, cfg.run_dir))


def _run_retrain(cfg: DictConfig) -> None:
    from metaprune.retrain import retrain, retrain_label

    use_supernet(cfg, cfg.run_dir)
    retrain(cfg, Path(cfg.run_dir) / "retrain" / retrain_label(cfg))


def _run_pipeline(cfg: DictConfig) -> None:
    from metaprune.pipeline import pipeline

    pipeline(cfg, Path(cfg.run_dir))


def _run_prune(cfg: DictConfig) -> None:
    from metaprune.prune import prune, prune_label

    prune(cfg, Path(cfg.run_dir) / "prune" / prune_label(cfg))


_COMMANDS: dict[str, Callable[[DictConfig], None]] = {
    "train": _run_train,
    "search": _run_search,
    "retrain": _run_retrain,
    "pipeline": _run_pipeline,
    "prune": _run_prune,
}


def _check_prune(cfg: DictConfig) -> None:
    from metaprune.prune import PruneConfig

    PruneConfig.from_any(cfg.prune).require_size()


_START_CHECKS: dict[str, Callable[[DictConfig], None]] = {"prune": _check_prune}
"""Checks a command needs beyond :func:`check_config`, run before its lock is taken."""


def _checked(cmd: str) -> Callable[[DictConfig], None]:
    """Command ``cmd`` after the start-up checks of every config group (:func:`check_config`)."""

    def run(cfg: DictConfig) -> None:
        check_config(cfg)
        _COMMANDS[cmd](cfg)

    return run


def _hydra_app(fn: Callable[[DictConfig], None]) -> Callable[[], None]:
    return hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(fn)


def _run(cmd: str, overrides: list[str]) -> None:
    """Run command ``cmd`` as a Hydra app holding the lock of its run directory.

    The configuration is composed and checked first and the lock taken before Hydra writes its
    record (``.hydra/``) into the run directory, so a bad value, or a second job into a
    directory in use, fails at once (exit 2, the error on stderr) and leaves the first job's
    files alone.  Rank 0 of a ``torchrun`` job takes the lock for all ranks; with Hydra's own
    flags (``--cfg``, ``--help``, ``-m``) Hydra runs unlocked.
    """
    app = _hydra_app(_checked(cmd))
    if int(os.environ.get("RANK", "0")) != 0 or any(a.startswith("-") for a in overrides):
        app()
        return
    with contextlib.ExitStack() as stack:
        try:
            cfg = load_config(overrides)
            _START_CHECKS.get(cmd, lambda c: None)(cfg)
            stack.enter_context(run_lock(cfg.run_dir, f"metaprune {cmd}"))
        except (HydraException, OmegaConfBaseException, ValueError, RunLockedError) as e:
            print(f"metaprune {cmd}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        app()


def _as_options(args: list[str]) -> list[str]:
    """``key=value`` words as ``--key value`` (``metaprune latency build model=resnet20``)."""
    out: list[str] = []
    for a in args:
        if "=" in a and not a.startswith("-"):
            key, value = a.split("=", 1)
            out += [f"--{key.replace('_', '-')}", value]
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metaprune`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "latency":
        from metaprune.latency_cli import latency_main

        raise SystemExit(latency_main(_as_options(rest)))
    if cmd not in _COMMANDS:
        print(f"metaprune: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    register_configs()
    sys.argv = [f"metaprune {cmd}", *rest]
    _run(cmd, rest)


if __name__ == "__main__":
    main()
