"""Latency look-up table and predictor (metaprune.cost.latency, metaprune.latency_cli)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import WidthScorer

from metaprune.arch import resolve
from metaprune.cost.latency import (
    LatencyModel,
    LatencyTable,
    LatencyTableError,
    MissingEntryError,
    TableMismatchError,
    build_latency_table,
    device_name,
    kendall_tau,
    latency_metrics,
    layer_acts,
    load_latency_model,
    required_keys,
    time_runners,
    torch_threads,
    validate_latency,
)
from metaprune.latency_cli import latency_main, space_of_table
from metaprune.models import build_pruned, create_space

FAST = {"warmup": 1, "repeats": 2, "rounds": 1}


def tiny_space(family: str = "resnet20", choices=(0.5, 1.0)):
    return create_space(family, choices=list(choices), stem="cifar", width_mult=0.25, input_size=8)


@pytest.fixture(scope="module", params=["resnet20", "mobilenet_v2"])
def built(request):
    space = tiny_space(request.param)
    return space, build_latency_table(space, n_fit=3, **FAST)


def fake_table(space, device: str | None = None, runtime: str = "torch") -> LatencyTable:
    """A table whose entries are given numbers (no timing): ms = cin + cout / 100 + kernel / 1e4."""
    entries = {k: k.cin + k.cout / 100 + k.kernel / 1e4 for k in required_keys(space)}
    return LatencyTable(
        space=space.fingerprint,
        family=space.family,
        space_desc=space.describe(),
        device_type="cpu",
        device=device or device_name("cpu"),
        runtime=runtime,
        batch=1,
        threads=1,
        input_shape=space.input_shape,
        act=space.arch.act,
        entries=entries,
        fit={"mode": "linear", "overhead_ms": 0.25, "scale": 1.5, "offset": -0.5, "nets": []},
        complete=True,
    )


def manual_sum(table: LatencyTable, space, config) -> float:
    """Sum of the entries of every layer of ``config``, looked up one by one."""
    w = space.widths(config)
    total = 0.0
    for layer, act in zip(space.arch.layers, layer_acts(space), strict=True):
        cin, cout = resolve(layer.cin, w), resolve(layer.cout, w)
        if layer.depthwise:
            cin = cout
        key = next(
            k
            for k in table.entries
            if (k.kind, k.kernel, k.stride, k.depthwise, k.in_hw, k.cin, k.cout, k.act)
            == (
                layer.kind,
                layer.kernel,
                layer.stride,
                layer.depthwise,
                layer.in_hw,
                cin,
                cout,
                act,
            )
        )
        total += table.entries[key]
    return total


def test_tiny_table_is_complete_and_positive(built):
    space, table = built
    keys = required_keys(space)
    assert set(keys) == set(table.entries)
    assert all(v > 0 for v in table.entries.values())
    assert table.complete and table.build_seconds > 0
    assert table.device == device_name("cpu") and table.runtime == "torch"
    assert len(table.fit["nets"]) == 3
    assert all(n["measured_ms"] > 0 for n in table.fit["nets"])

    # equal layers share one entry: fewer entries than (layer, width pair) combinations
    def n(dim):
        return len(space.genes[space.gene_index[dim]].unique_widths) if isinstance(dim, str) else 1

    combos = sum(n(ly.cout) * (1 if ly.depthwise else n(ly.cin)) for ly in space.arch.layers)
    assert len(keys) < combos


def test_entry_module_is_the_pruned_net_layer(built):
    space, _ = built
    config = space.sample(0)
    net = build_pruned(space, config)
    w = space.widths(config)
    for layer, act in zip(space.arch.layers, layer_acts(space), strict=True):
        cin, cout = resolve(layer.cin, w), resolve(layer.cout, w)
        key = next(
            k
            for k in required_keys(space)
            if (k.cin, k.cout) == (cin, cout)
            and (k.kernel, k.stride, k.in_hw, k.act)
            == (layer.kernel, layer.stride, layer.in_hw, act)
            and k.kind == layer.kind
        )
        assert repr(key.module(space.arch.act)) == repr(net.get_submodule(layer.name))
        y = key.module(space.arch.act)(key.example(2))
        assert y.shape[1] == cout


def test_predictor_is_sum_of_entries_plus_overhead():
    space = tiny_space("mobilenet_v2", choices=(0.25, 0.5, 1.0))
    table = fake_table(space)
    model = LatencyModel(table, space)
    configs = [space.sample(i) for i in range(6)] + [space.min(), space.max()]
    sums = np.array([manual_sum(table, space, c) for c in configs])
    np.testing.assert_allclose(model.layer_sum_many(configs), sums, rtol=1e-12)
    np.testing.assert_allclose(model.predict_many(configs, mode="sum"), sums + 0.25, rtol=1e-12)
    np.testing.assert_allclose(model.predict_many(configs), 1.5 * sums - 0.5, rtol=1e-12)
    assert model.predict(configs[0]) == pytest.approx(1.5 * sums[0] - 0.5)
    assert model.predict(space.max()) > model.predict(space.min())


def test_json_round_trip(tmp_path, built):
    space, table = built
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.to_dict() == table.to_dict()
    a, b = LatencyModel(table, space), load_latency_model(path, space)
    configs = [space.sample(i) for i in range(5)]
    np.testing.assert_array_equal(a.predict_many(configs), b.predict_many(configs))
    data = json.loads(path.read_text())
    data["format"] = "something-else"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="format"):
        LatencyTable.load(path)
    path.write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(path)


def test_mismatches_are_refused(tmp_path):
    space = tiny_space()
    path = fake_table(space).save(tmp_path / "t.json")
    with pytest.raises(TableMismatchError, match="space"):
        load_latency_model(path, tiny_space(choices=(0.25, 1.0)))
    with pytest.raises(TableMismatchError, match="runtime"):
        load_latency_model(path, space, runtime="onnxruntime")
    with pytest.raises(TableMismatchError, match="device type"):
        load_latency_model(path, space, device="cuda")
    with pytest.raises(TableMismatchError, match="device"):
        load_latency_model(path, space, device="Another CPU (arm64)")
    foreign = fake_table(space, device="Another CPU (arm64)").save(tmp_path / "f.json")
    with pytest.raises(TableMismatchError, match="Another CPU"):
        load_latency_model(foreign, space)
    # naming the table's device explicitly uses a table measured elsewhere on purpose
    assert load_latency_model(foreign, space, device="Another CPU (arm64)").predict(space.max()) > 0
    with pytest.raises(TableMismatchError, match="batch size"):
        fake_table(space).check(space, batch=8)


def test_missing_entry_is_named_or_measured(tmp_path):
    space = tiny_space()
    big = max(required_keys(space), key=lambda k: (k.cin * k.cout, k.kernel))
    foreign = fake_table(space, device="Another CPU (arm64)")
    del foreign.entries[big]
    with pytest.raises(MissingEntryError, match=rf"1 entry .*\({big.cin}->{big.cout}\)"):
        LatencyModel(foreign, space)
    local = fake_table(space)
    local.timing = dict(FAST)
    del local.entries[big]
    with pytest.raises(MissingEntryError, match="measuring disabled"):
        LatencyModel(local, space, measure_missing=False)
    path = local.save(tmp_path / "t.json")
    model = load_latency_model(path, space)
    assert model.measured_missing == 1
    assert 0 < model.table.entries[big] < 100  # measured here, not zero, not the fake scale
    assert big in LatencyTable.load(path).entries  # saved back


def test_build_resumes_a_partial_table(tmp_path):
    space = tiny_space()
    keys = required_keys(space)
    path = tmp_path / "t.json"
    partial = build_latency_table(space, n_fit=2, **FAST)
    partial.entries = {keys[0]: 123.0}
    partial.complete, partial.fit = False, {}
    partial.save(path)
    table = build_latency_table(space, n_fit=2, path=path, **FAST)
    assert table.entries[keys[0]] == 123.0  # kept, not re-measured
    assert set(table.entries) == set(keys)
    assert LatencyTable.load(path).complete
    again = build_latency_table(space, n_fit=2, path=path, **FAST)  # complete: returned as is
    assert again.to_dict() == table.to_dict()
    other = build_latency_table(space, n_fit=2, path=path, clock="cpu", **FAST)
    assert keys[0] in other.entries and other.entries[keys[0]] != 123.0  # other timing: redone


def test_cpu_clock_and_bad_arguments():
    space = tiny_space(choices=(1.0,))
    table = build_latency_table(space, n_fit=2, clock="cpu", **FAST)
    assert table.timing["clock"] == "cpu" and all(v > 0 for v in table.entries.values())
    with pytest.raises(ValueError, match="threads=1"):
        build_latency_table(space, clock="cpu", threads=2)
    with pytest.raises(ValueError, match="unknown latency runtime"):
        build_latency_table(space, runtime="tflite")
    with pytest.raises(ValueError, match="n_fit"):
        build_latency_table(space, n_fit=1)
    calls = []
    ms = time_runners([lambda: calls.append(1)], warmup=2, settle=1, repeats=2, rounds=3)
    assert len(calls) == 2 + 3 * (1 + 2) and ms.shape == (1,)  # settle calls are not timed
    with pytest.raises(ValueError, match="settle >= 0"):
        build_latency_table(space, settle=-1)
    model = LatencyModel(table, space)
    with pytest.raises(ValueError, match="unknown sampling"):
        validate_latency(model, n=2, sampling="grid")
    before = torch.get_num_threads()
    with pytest.raises(KeyError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise KeyError  # the thread count comes back however the timed code ends
    assert torch.get_num_threads() == before


def test_one_set_of_timing_defaults():
    """A table, its builder, the CLI and ``time_runners`` time the same way by default."""
    import inspect

    from metaprune.cost.latency import TIMING, LatencyTable
    from metaprune.latency_cli import _parser

    table = LatencyTable(
        **{f: None for f in ("space", "family", "space_desc", "device_type")},
        device="cpu",
        runtime="torch",
        batch=1,
        threads=1,
        input_shape=(3, 8, 8),
        act="relu",
    )
    assert table.timing == dict(TIMING)
    cli = vars(_parser().parse_args(["build", "--model", "resnet20", "--out", "t.json"]))
    for fn in (build_latency_table, time_runners):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in TIMING} == dict(TIMING)
    assert {k: cli[k] for k in TIMING} == dict(TIMING)


def test_validation_metrics_and_cli(tmp_path):
    space = tiny_space()
    out = tmp_path / "t.json"
    assert latency_main(["build", "--model", "resnet20", "--stem", "cifar", "--width-mult",
                         "0.25", "--input-size", "8", "--choices", "0.5", "1.0",
                         "--warmup", "1", "--repeats", "2", "--rounds", "1", "--n-fit", "3",
                         "--settle", "1",
                         "--out", str(out)]) == 0  # fmt: skip
    table = LatencyTable.load(out)
    assert space_of_table(table).fingerprint == space.fingerprint and table.timing["settle"] == 1
    old_nets = table.fit["nets"]
    res = validate_latency(LatencyModel(table, space), n=4, seed=0, rounds=1, refit=True)
    assert len(res["measured_ms"]) == 4 and res["passes"] == 2
    assert res["repeatability"]["mape"] >= 0 and -1 <= res["repeatability"]["tau"] <= 1
    assert [f["genes"] for f in table.fit["nets"]] == [f["genes"] for f in old_nets]
    assert table.fit["nets"] != old_nets  # refit measured the same networks again
    for r in res["modes"].values():
        assert 0 <= r["within10"] <= 100 and r["mape"] >= 0 and -1 <= r["tau"] <= 1
    plot, js = tmp_path / "v.png", tmp_path / "v.json"
    args = ["validate", "--table", str(out), "--n", "3", "--rounds", "1", "--sampling", "spread"]
    assert latency_main([*args, "--plot", str(plot), "--json", str(js)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads(js.read_text())["configs"]) == 3
    assert json.loads(js.read_text())["sampling"] == "spread"


def test_kendall_tau_and_metrics():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(2 * 3))  # tau-b
    m = latency_metrics([1.0, 2.2, 2.5], [1.0, 2.0, 3.0])
    assert m["mape"] == pytest.approx(100 * (0 + 0.1 + 1 / 6) / 3)
    assert m["within10"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_onnxruntime_table():
    pytest.importorskip("onnxruntime")
    space = tiny_space(choices=(1.0,))
    table = build_latency_table(space, runtime="onnxruntime", n_fit=2, **FAST)
    assert table.runtime == "onnxruntime" and "onnxruntime" in table.versions
    assert all(v > 0 for v in table.entries.values())
    with pytest.raises(TableMismatchError, match="runtime"):
        table.check(space, runtime="torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_table():
    space = tiny_space()
    table = build_latency_table(space, device="cuda", n_fit=3, **FAST)
    assert table.device_type == "cuda" and table.device == torch.cuda.get_device_name()
    assert all(v > 0 for v in table.entries.values())
    assert LatencyModel(table, space).predict(space.max()) > 0


def test_latency_constrained_and_pareto_search_with_a_fake_table(tmp_path):
    from metaprune.search import SearchConfig, default_costs, run_search

    space = tiny_space("resnet20", choices=(0.25, 0.5, 0.75, 1.0))
    model = load_latency_model(fake_table(space).save(tmp_path / "t.json"), space)
    costs = default_costs(space, model)
    lo, hi = model.predict(space.min()), model.predict(space.max())
    bound = lo + 0.4 * (hi - lo)  # absolute milliseconds
    small = {"population": 12, "generations": 3, "parents": 4, "mutation_children": 4}
    small.update(crossover_children=4, tensorboard=False)
    run = run_search(
        space,
        WidthScorer(),
        costs,
        SearchConfig(constraints={"latency": f"{bound}ms"}, **small),
        tmp_path / "ga",
    )
    best = run.winners[0]["best"]
    assert best["latency"] <= bound
    assert best["latency"] == pytest.approx(model.predict(run.config(best)))
    assert all(r["latency"] <= bound for r in run.front)
    # a wider config under the bound would score higher: the winner is the best scored one
    fits = [r for r in run.table() if r["latency"] <= bound]
    assert best["accuracy"] == max(r["accuracy"] for r in fits)

    pareto = run_search(
        space,
        WidthScorer(),
        costs,
        SearchConfig(algorithm="nsga2", objectives=["latency", "flops"], **small),
        tmp_path / "nsga2",
    )
    front = pareto.front
    assert front
    for a in front:
        for b in front:
            dominates = (
                b["accuracy"] >= a["accuracy"]
                and b["latency"] <= a["latency"]
                and b["flops"] <= a["flops"]
                and (b["accuracy"], b["latency"], b["flops"])
                != (a["accuracy"], a["latency"], a["flops"])
            )
            assert not dominates
