"""Start-up checks of the run configuration (metaprune.schema.check_config, metaprune.groups)."""

from __future__ import annotations

import re

import pytest

from metaprune.engine import TrainConfig
from metaprune.groups import ConfigError, to_dataclass
from metaprune.retrain import RetrainConfig
from metaprune.schema import load_config
from metaprune.search.config import SearchConfig

BAD = [
    # retrain's overrides of train / optim / sched: typed only once merged onto their groups
    ("+retrain.train.epohcs=3", "retrain.train.epohcs"),
    ("+retrain.train.epochs=abc", "retrain.train.epochs: Value 'abc'"),
    ("+retrain.train.batch_size=0", "retrain.train: train.batch_size must be >= 1"),
    ("+retrain.optim.lr=-1", "retrain.optim: optim.lr must be positive"),
    ("+retrain.sched.name=step", "retrain.sched: unknown schedule sched.name='step'"),
    ("retrain.init=warm", "retrain.init='warm'"),
    ("retrain.kd.weight=2", "retrain.kd needs"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.amp=bf61", "train.amp must be"),
    ("train.label_smoothing=1.5", "train.label_smoothing"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("sched.final_factor=2", "sched.final_factor"),
    ("search.population=0", "search.population must be >= 1"),
    ("search.scorer.stack=0", "search.scorer.stack must be >= 1"),
    ("search.scorer.racing_slice=0", "search.scorer.racing_slice"),
    # bounds are read at start-up: a latency target needs a unit and a table, ms is not FLOPs
    ("search.targets=[2ms]", "search.targets[0]='2ms': 'ms' is a latency unit"),
    ("+search.constraints.flops=[1M,2M,3M]", "a range must be [lower, upper]"),
    ("+search.constraints.latency=5ms", "needs search.latency_table"),
    ("pruningnet.hidden=0", "pruningnet.hidden must be >= 1"),
    ("data.train_limit=0", "data.train_limit=0"),
    ("data.name=mnist", "data.name='mnist'"),
    ("model.name=resnet21", "model / space: unknown model family 'resnet21'"),
    ("model.width_mult=0", "model / space: width_mult must be positive"),
    ("model.stem=tiny", "model / space: unknown stem 'tiny'"),
    ("space.choices=[0,0.5]", "model / space: space choices must be ratios in (0, 1]"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_every_group_is_checked_at_composition(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(["experiment=tiny", override])


def test_latency_bare_number_is_refused_at_start_up(tmp_path) -> None:
    table = f"search.latency_table={tmp_path / 'lat.json'}"  # read when the search starts
    with pytest.raises(ValueError, match="a bare number is ambiguous for latency"):
        load_config(["experiment=tiny", "search.cost=latency", "search.targets=[1]", table])
    cfg = load_config(["experiment=tiny", "search.cost=latency", "search.targets=[3ms]", table])
    assert list(cfg.search.targets) == ["3ms"]


@pytest.mark.parametrize("algorithm", ["ga", "nsga2"])
def test_latency_as_the_primary_cost_needs_a_table_without_targets(algorithm: str) -> None:
    # the results table and plot are over search.cost, targeted or not
    with pytest.raises(ValueError, match=r"needs search\.latency_table"):
        load_config(
            [
                "experiment=tiny",
                f"search.algorithm={algorithm}",
                "search.cost=latency",
                "search.targets=[]",
            ]
        )


def test_good_overrides_compose() -> None:
    cfg = load_config(["experiment=tiny", "+retrain.train.batch_size=16", "retrain.init=inherit"])
    assert cfg.retrain.train.batch_size == 16
    assert cfg.retrain.pruningnet is None  # the start-up check fills in nothing


def test_one_way_from_a_group_to_its_dataclass() -> None:
    tcfg = to_dataclass(TrainConfig, {"epochs": "3"}, "train")  # typed like Hydra types it
    assert tcfg.epochs == 3 and isinstance(tcfg, TrainConfig)
    assert to_dataclass(TrainConfig, tcfg, "train") is tcfg
    assert to_dataclass(TrainConfig, None).epochs == TrainConfig().epochs
    with pytest.raises(ConfigError, match=r"^train\.epohcs: Key 'epohcs' not in 'TrainConfig'"):
        to_dataclass(TrainConfig, {"epohcs": 3}, "train")
    with pytest.raises(ConfigError, match=r"retrain\.kd\.temprature"):
        RetrainConfig.from_any({"kd": {"temprature": 2.0}})
    with pytest.raises(ConfigError, match=r"search\.scorer\.stak"):
        SearchConfig.from_any({"scorer": {"stak": 2}})
    with pytest.raises(ConfigError, match="train must be a mapping"):
        to_dataclass(TrainConfig, [3], "train")
