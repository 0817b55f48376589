"""``metaprune prune``: from a retrain run or a state dict to a fine-tuned, exported network."""

from __future__ import annotations

import sys

import pytest
import torch

from metaprune import build_pruned, count_flops
from metaprune.cli import main
from metaprune.config import build_space
from metaprune.export import load_pruned
from metaprune.groups import ConfigError
from metaprune.io import read_json
from metaprune.prune import (
    CriterionError,
    PruneInputError,
    load_source,
    prune,
    prune_label,
    prune_state,
)
from metaprune.schema import load_config

TINY = ["experiment=tiny", "retrain.latency_repeats=0"]


def tiny_space():
    cfg = load_config(TINY)
    return build_space(cfg.model, cfg.space, (3, 12, 12), 10)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A trained (one short epoch) full-width network of experiment=tiny: a retrain run dir."""
    run = tmp_path_factory.mktemp("run")
    argv = list(sys.argv)
    main(["retrain", *TINY, "retrain.uniform=1.0", f"run_dir={run}"])
    sys.argv = argv
    return run


def test_prune_command_fine_tunes_with_distillation_and_exports(full_run, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    args = [*TINY, f"run_dir={full_run}", f"prune.from={full_run}/retrain/uniform1"]
    args += ["prune.criterion=fisher", "prune.target=0.5", "prune.kd=true"]
    args += ["+prune.options.batches=1", "prune.batch_size=16"]
    main(["prune", *args])
    out = full_run / "prune" / "fisher-flops0.5-kd"
    result = read_json(out / "result.json")
    assert result["flops_ratio"] <= 0.5
    assert result["identity"]["init"]["kind"] == "prune"
    assert result["identity"]["kd"] is not None
    assert (out / "export" / "model.ts").is_file() and (out / "unpruned.pt").is_file()
    summary = read_json(out / "prune.json")
    assert summary["widths"] == result["widths"] and summary["criterion"] == "fisher"
    space = tiny_space()
    net = load_pruned(out / "export")
    assert count_flops(space, space.from_json(result["config"])) == result["flops"]
    assert net(torch.zeros(2, 3, 12, 12)).shape == (2, 10)
    # a finished run answers without scoring or training again
    cfg = load_config(args)
    assert prune(cfg, out)["test_accuracy"] == result["test_accuracy"]


def test_prune_command_with_depth_genes_removes_the_blocks_sss_zeroes(full_run, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    args = [*TINY, f"run_dir={full_run}", f"prune.from={full_run}/retrain/uniform1"]
    args += ["space.depth=true", "prune.criterion=sss", "prune.target=0.5", "prune.batch_size=16"]
    # a block threshold above every block factor: each is zero after the first step, while the
    # channels keep theirs (gamma 0)
    args += ["+prune.options.steps=3", "+prune.options.gamma=0.0", "+prune.options.factor_lr=1.0"]
    args += ["+prune.options.block_gamma=5.0"]
    main(["prune", *args])
    out = full_run / "prune" / "sss-flops0.5-depth"
    result = read_json(out / "result.json")
    cfg = load_config(args)
    space = build_space(cfg.model, cfg.space, (3, 12, 12), 10)
    config = space.from_json(result["config"])
    summary = read_json(out / "prune.json")
    assert summary["removed_blocks"] == list(space.depth_blocks) == list(space.removed(config))
    assert result["identity"]["init"]["depth"] is True and result["flops_ratio"] <= 0.5
    assert count_flops(space, config) == result["flops"]
    net = load_pruned(out / "export")
    assert net(torch.zeros(2, 3, 12, 12)).shape == (2, 10)


def test_prune_from_a_state_dict_at_given_widths_keeps_the_l1_top_channels(full_run, tmp_path):
    space = tiny_space()
    source, _ = load_source(full_run / "retrain" / "uniform1", space)
    torch.save(source.state_dict(), tmp_path / "full.pt")
    args = [*TINY, f"prune.from={tmp_path / 'full.pt'}", "prune.widths=0.5", "retrain.epochs=1"]
    args += ["prune.recalib_batches=2", "prune.batch_size=16"]
    cfg = load_config(args)
    assert prune_label(cfg) == "l1-widths0.5"
    result = prune(cfg, tmp_path / "out")
    assert 0 <= result["prune"]["search_accuracy"] <= 1
    start = torch.load(tmp_path / "out" / "start.pt", weights_only=True)["state_dict"]
    copied = prune_state(
        space, source.state_dict(), {g: torch.tensor(k) for g, k in result["prune"]["kept"].items()}
    )
    name = "features.4.body.0.1.running_var"  # recomputed on the pruned network's activations
    assert start[name].shape == copied[name].shape and not torch.allclose(start[name], copied[name])
    assert torch.equal(start["features.4.body.0.0.weight"], copied["features.4.body.0.0.weight"])
    assert result["widths"] == list(space.uniform(0.5, nearest=True).width_tuple())
    kept = result["prune"]["kept"]
    conv = source.get_submodule("features.1.body.0.0").weight.detach()
    norms = conv.abs().flatten(1).sum(1)
    top = norms.argsort(descending=True)[: len(kept["s1.b0.mid"])]
    assert 0 < len(top) < len(norms) and kept["s1.b0.mid"] == sorted(top.tolist())


def test_bad_prune_inputs_are_named_errors(tmp_path):
    space = tiny_space()
    with pytest.raises(CriterionError, match=r"prune\.criterion='magnitude' is unknown"):
        load_config([*TINY, "prune.criterion=magnitude"])
    with pytest.raises(ConfigError, match="not both"):
        load_config([*TINY, "prune.target=0.5", "prune.widths=0.5"])
    with pytest.raises(ConfigError, match=r"prune\.from is unset"):
        prune(load_config([*TINY, "prune.target=0.5"]), tmp_path / "a")
    with pytest.raises(PruneInputError, match=r"neither a \.pt file nor a directory"):
        load_source(tmp_path / "nope", space)
    other = build_pruned(space, space.uniform(0.5, nearest=True)).state_dict()
    torch.save(other, tmp_path / "narrow.pt")
    with pytest.raises(PruneInputError, match="does not match the full-width resnet20"):
        load_source(tmp_path / "narrow.pt", space)
    torch.save({"weights": [1, 2]}, tmp_path / "junk.pt")
    with pytest.raises(PruneInputError, match="holds no state dict"):
        load_source(tmp_path / "junk.pt", space)


def test_widths_from_a_config_file_keep_its_widths(tmp_path):
    from metaprune.prune import PruneConfig, prune_network

    space = tiny_space()
    winner = space.config([(i * 7) % len(space.ratios) for i in range(len(space))])
    (tmp_path / "winner.json").write_text(winner.to_json())
    model = build_pruned(space, space.max()).eval()
    batches = iter([(torch.randn(4, 3, 12, 12), torch.randint(10, (4,)))] * 2)
    cfg = PruneConfig(criterion="l1", widths=str(tmp_path / "winner.json"))
    config, state, _ = prune_network(model, space, cfg, batches)
    assert config == winner
    build_pruned(space, config).load_state_dict(state, strict=True)
    other = build_space({"name": "resnet20", "width_mult": 0.5}, None, (3, 12, 12), 10)
    (tmp_path / "other.json").write_text(other.max().to_json())
    with pytest.raises(PruneInputError, match=r"prune\.widths: .*other\.json"):
        prune_network(model, space, PruneConfig(widths=str(tmp_path / "other.json")), batches)


def test_prune_command_without_a_source_fails_at_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as exc:
        main(["prune", *TINY, f"run_dir={tmp_path}", "prune.target=0.5"])
    assert exc.value.code == 2 and "prune.from is unset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
