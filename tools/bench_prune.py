"""Benchmark: channel-importance criteria on trained networks (issue 19's evidence).

Pruning criteria (``metaprune prune``, :mod:`metaprune.prune`) start from a trained full-width
network.  Steps, each resumable and skipped when done (outputs under ``<out-root>/<name>/``; a
step made from other inputs is refused, naming them):

* ``full``: the full-width networks, trained by ``metaprune retrain retrain.uniform=1.0`` with
  ``--full-epochs`` epochs: ``--alloc-model`` (the benchmark's CBM MobileNet) and
  ``--finetune-model`` (ResNet-56, CIFAR stem);
* ``allocate``: each criterion's global allocation on the trained CBM MobileNet at every
  ``--targets`` share of the full FLOPs, on the benchmark's width choices, looked up in the
  Channel-Bench-Macro results: stand-alone accuracy and percentile among the networks within the
  same FLOPs, beside the uniform network, the benchmark's best and, with ``--alloc-search-run``,
  MetaPruning's winner;
* ``finetune``: each criterion prunes the trained ResNet-56 to ``--finetune-target`` of its FLOPs
  and fine-tunes ``--finetune-epochs`` epochs (``retrain`` recipe, ``--kd`` distillation from the
  unpruned network), beside the L1-pruned uniform network with the same budget, the unpruned
  network fine-tuned alike (the control: a source trained briefly gains from more epochs too)
  and, with ``--finetune-search-run``, MetaPruning's winner retrained from scratch for as many
  epochs and L1-pruned at the winner's widths;
* ``peer``: Torch-Pruning's magnitude pruner (``torch-pruning``, optional: skipped with a note
  when it is not installed) at the same FLOPs, fine-tuned by the same engine and recipe.

Usage: ``python tools/bench_prune.py --results PATH/Results_MobileNet.json --data-root
data/cifar10-jpeg [--steps full allocate finetune peer] [--criteria l1 fisher ...]
[--full-epochs 30] [--finetune-epochs 5] [--option fisher.batches=16 ...] [--set KEY=VALUE
...]`` (``--set`` adds Hydra overrides of the project's config to every run, e.g.
``train.batch_size=256``; ``--alloc-from`` / ``--finetune-from`` take a finished full-width
retrain run instead of training one).  Tables are printed as Markdown and written to ``prune.md``.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf, open_dict

from metaprune import build_pruned, count_flops
from metaprune.benchmarks import best_within, config_key, key_config, load_results, percentile
from metaprune.benchmarks.oracle import feasible_means, flops_limit
from metaprune.benchmarks.steps import Steps
from metaprune.config import build_space
from metaprune.data import build_datasets, make_loader, recalibration_batches
from metaprune.engine import evaluate, recalibrate_bn
from metaprune.engine.identity import file_hash
from metaprune.io import read_json
from metaprune.prune import (
    PruneConfig,
    allocate,
    list_criteria,
    load_source,
    make_criterion,
    producers,
    prune,
)
from metaprune.prune.job import stream
from metaprune.retrain import RESULT_FILE, RetrainConfig, resolve_config, retrain
from metaprune.schema import load_config
from metaprune.space import ChannelConfig, ChannelSpace

STEPS = ("full", "allocate", "finetune", "peer")
log = logging.getLogger("bench_prune")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", help="Channel-Bench-Macro results JSON (for allocate)")
    ap.add_argument("--data-root", help="CIFAR-10 folder (JPEG or pickle layout)")
    ap.add_argument("--data", default="cifar10", help="the project's data group")
    ap.add_argument("--name", default="cifar10", help="output folder name")
    ap.add_argument("--out-root", default="outputs/bench_prune")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--criteria", nargs="+", default=list_criteria(), choices=list_criteria())
    ap.add_argument("--option", nargs="*", default=[], metavar="CRITERION.KEY=VALUE")
    ap.add_argument("--alloc-model", default="cbm_mobilenet")
    ap.add_argument("--finetune-model", default="resnet56")
    ap.add_argument("--targets", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    ap.add_argument("--finetune-target", type=float, default=0.5)
    ap.add_argument("--alloc-search-run", help="a search run of --alloc-model: its winners")
    ap.add_argument("--finetune-search-run", help="a search run of --finetune-model: its winner")
    ap.add_argument("--full-epochs", type=int, default=30, help="full-width training epochs")
    ap.add_argument("--alloc-from", help="a finished full-width retrain run of --alloc-model")
    ap.add_argument("--finetune-from", help="a finished full-width retrain run to prune")
    ap.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs")
    ap.add_argument("--kd", action="store_true", help="fine-tune distilling from the unpruned")
    ap.add_argument("--finetune-lr", type=float, help="fine-tuning lr (default: the recipe's)")
    ap.add_argument("--batch-size", type=int, default=64, help="criteria's scoring batches")
    ap.add_argument("--recalib-batches", type=int, default=0, help="BN recalibration batches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return ap.parse_args(argv)


def _option_value(text: str) -> Any:
    """A ``--option`` value read as YAML, where YAML 1.1 leaves ``1e-4`` a string: a number."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def criterion_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--option fisher.batches=16`` as ``{"fisher": {"batches": 16}}`` (values read as YAML)."""
    out: dict[str, dict[str, Any]] = {c: {} for c in list_criteria()}
    for item in args.option:
        key, _, value = item.partition("=")
        name, _, opt = key.partition(".")
        if name not in out or not opt or not value:
            raise SystemExit(
                f"--option {item!r}: expected CRITERION.KEY=VALUE, e.g. fisher.batches=16"
            )
        out[name][opt] = _option_value(value)
    return out


def compose(args: argparse.Namespace, model: str, *extra: str) -> Any:
    """The project's config of ``model`` on ``--data`` (``--data-root``), then ``extra`` and
    ``--set``."""
    over = [f"model={model}", f"data={args.data}", "retrain.export_formats=[torchscript]"]
    if args.data_root:
        over.append(f"data.root={args.data_root}")
    return load_config([*over, *extra, *args.set])


def data_space(cfg: Any) -> ChannelSpace:
    """The space of ``cfg`` with the input and classes of its data."""
    data = build_datasets(cfg.data)
    return build_space(cfg.model, cfg.get("space"), data.input_shape, data.num_classes)


def full_step(
    steps: Steps, cfg: Any, name: str, epochs: int, existing: str | None = None
) -> dict[str, Any]:
    """The full-width network of ``cfg``, trained ``epochs`` epochs: its run dir and result;
    ``existing`` (a finished retrain run of it) is taken as it is instead."""
    if existing:
        r = read_json(Path(existing) / RESULT_FILE)
        return {"dir": existing, "test_accuracy": r["test_accuracy"], "flops": r["flops"]}
    cfg = OmegaConf.merge(cfg, {"retrain": {"uniform": 1.0, "epochs": epochs}})
    out = steps.root / name

    def compute() -> dict[str, Any]:
        r = retrain(cfg, out)
        return {"dir": str(out), "test_accuracy": r["test_accuracy"], "flops": r["flops"]}

    identity = {"run": OmegaConf.to_container(cfg, resolve=True)}
    return steps.run(name, identity, compute)


def _source_id(full: dict[str, Any]) -> dict[str, Any]:
    return {"dir": full["dir"], "sha256": file_hash(Path(full["dir"]) / "export" / "pruned.pt")}


def uniform_under(space: ChannelSpace, budget: float) -> ChannelConfig:
    """The widest uniform config of ``space`` with FLOPs at most ``budget``."""
    fits = [
        space.uniform(r) for r in space.ratios if count_flops(space, space.uniform(r)) <= budget
    ]
    if not fits:
        raise ValueError(f"no uniform config within {budget:.4g} FLOPs")
    return fits[-1]


def allocate_step(
    steps: Steps,
    args: argparse.Namespace,
    cfg: Any,
    full: dict[str, Any],
    options: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each criterion's global allocation at each target, judged by the benchmark."""
    results = load_results(args.results)
    results_id = {"path": str(args.results), "sha256": file_hash(args.results)}
    space = data_space(cfg)
    data = build_datasets(cfg.data)
    source, _ = load_source(full["dir"], space)

    def judge(config: ChannelConfig, target: float) -> dict[str, Any]:
        key = config_key(config)
        mean = float(results.mean[results.row[key]])
        return {
            "key": key,
            "flops_ratio": count_flops(space, config) / count_flops(space, space.max()),
            "accuracy": mean,
            "percentile": percentile(feasible_means(results, space, target), mean),
        }

    rows = []
    for name in args.criteria:

        def compute(name: str = name) -> list[dict[str, Any]]:
            torch.manual_seed(args.seed)
            crit = make_criterion(name, options[name])
            batches = stream(data.train, args.batch_size, args.seed, torch.device("cpu"))
            scores = crit.score(copy.deepcopy(source), space, batches)
            out = []
            for t in args.targets:
                budget = t * count_flops(space, space.max())
                config = allocate(space, scores, budget, "flops", crit.normalise)
                out.append({"criterion": name, "target": t, **judge(config, t)})
            return out

        identity = {
            "source": _source_id(full),
            "results": results_id,
            "criterion": name,
            "options": options[name],
            "targets": args.targets,
            "batch_size": args.batch_size,
            "seed": args.seed,
        }
        rows += steps.run(f"allocate/{name}", identity, compute)
    for t in args.targets:
        budget = t * count_flops(space, space.max())
        rows.append({"criterion": "uniform", "target": t, **judge(uniform_under(space, budget), t)})
        best = key_config(space, best_within(results, flops_limit(results, space, t)))
        rows.append({"criterion": "benchmark best", "target": t, **judge(best, t)})
        if args.alloc_search_run:
            winner = search_winner(args.alloc_search_run, t, space)
            rows.append({"criterion": "MetaPruning winner", "target": t, **judge(winner, t)})
    return rows


def search_winner(run_dir: str, target: float, space: ChannelSpace) -> ChannelConfig:
    """The winner of a search run at ``target`` (or its best scored config under that bound)."""
    return resolve_config(RetrainConfig(from_search=run_dir, target=target), space)


def finetune_step(
    steps: Steps,
    args: argparse.Namespace,
    cfg: Any,
    full: dict[str, Any],
    options: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each criterion (and the L1-pruned uniform network) at ``--finetune-target``, fine-tuned
    with the same budget, beside the unpruned network fine-tuned alike."""
    space = data_space(cfg).width_space  # the uniform network has every block (space.depth)
    uniform = uniform_under(space, args.finetune_target * count_flops(space, space.max()))
    runs = {
        n: {"criterion": n, "options": options[n], "target": args.finetune_target}
        for n in args.criteria
    }
    runs["uniform (l1)"] = {"criterion": "l1", "widths": float(uniform.ratios()[0])}
    # the control: nothing pruned, the same fine-tuning (an under-trained source gains from it)
    runs["unpruned (same fine-tune)"] = {"criterion": "l1", "widths": 1.0}
    rows = []
    if args.finetune_search_run:
        winner = search_winner(args.finetune_search_run, args.finetune_target, space)
        steps.root.mkdir(parents=True, exist_ok=True)
        (steps.root / "winner.json").write_text(winner.to_json())
        runs["winner widths (l1)"] = {"criterion": "l1", "widths": str(steps.root / "winner.json")}
        rows.append(scratch_step(steps, args, cfg, winner))
    for label, block in runs.items():
        pcfg = PruneConfig(
            source=full["dir"],
            batch_size=args.batch_size,
            recalib_batches=args.recalib_batches,
            seed=args.seed,
            kd=args.kd,
            **block,
        )
        run_cfg = copy.deepcopy(cfg)
        with open_dict(run_cfg):
            run_cfg.prune = pcfg.block()
            run_cfg.retrain.epochs = args.finetune_epochs
            run_cfg.retrain.optim = finetune_optim(args, run_cfg)
        out = steps.root / "finetune" / label.replace(" ", "_").replace("(", "").replace(")", "")

        def compute(run_cfg: Any = run_cfg, out: Path = out, label: str = label) -> dict:
            r = prune(run_cfg, out)
            return {
                "criterion": label,
                "flops_ratio": r["flops_ratio"],
                "before": r["prune"].get("search_accuracy"),
                "test_accuracy": r["test_accuracy"],
                "dir": str(out),
            }

        identity = {
            "source": _source_id(full),
            "run": OmegaConf.to_container(run_cfg, resolve=True),
        }
        rows.append(steps.run(f"finetune/{out.name}", identity, compute))
    return rows


def scratch_step(
    steps: Steps, args: argparse.Namespace, cfg: Any, winner: ChannelConfig
) -> dict[str, Any]:
    """MetaPruning's way: the search's winner retrained from scratch, ``--finetune-epochs``."""
    run_cfg = OmegaConf.merge(cfg, {"retrain": {"epochs": args.finetune_epochs}})
    out = steps.root / "finetune" / "metapruning_scratch"

    def compute() -> dict[str, Any]:
        r = retrain(run_cfg, out, winner)
        return {
            "criterion": "MetaPruning winner (from scratch)",
            "flops_ratio": r["flops_ratio"],
            "test_accuracy": r["test_accuracy"],
            "dir": str(out),
        }

    identity = {"winner": winner.to_dict(), "run": OmegaConf.to_container(run_cfg, resolve=True)}
    return steps.run("finetune/metapruning_scratch", identity, compute)


def finetune_optim(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """The ``retrain.optim`` overrides of a fine-tune: ``--finetune-lr`` over ``cfg``'s."""
    optim = OmegaConf.to_container(cfg.retrain.optim, resolve=True)
    return {**optim, "lr": args.finetune_lr} if args.finetune_lr else optim


def tp_widths(model: torch.nn.Module, space: ChannelSpace) -> dict[str, int]:
    """Gene -> width of a network Torch-Pruning pruned (its coupled layers agree)."""
    out = {}
    for gene, layers in producers(space).items():
        found = {model.get_submodule(ly.name)[1].num_features for ly in layers}
        if len(found) != 1:
            raise ValueError(f"Torch-Pruning gave gene {gene} several widths {sorted(found)}")
        out[gene] = found.pop()
    return out


def space_for_widths(cfg: Any, space: ChannelSpace, widths: dict[str, int]) -> tuple[Any, Any]:
    """(config with ``space.choices`` holding every gene's ratio, its config of ``widths``): so
    a network of any widths is a config of a space the retrain engine trains."""
    ratios = sorted({widths[g.name] / g.max_channels for g in space.genes} | {1.0})
    cfg = OmegaConf.merge(cfg, {"space": {"choices": ratios}})
    s = build_space(cfg.model, cfg.space, space.input_shape, space.num_classes)
    config = s.config([ratios.index(widths[g.name] / g.max_channels) for g in s.genes])
    if s.widths(config) != widths:
        raise ValueError("widths do not round-trip through the space's choices")
    return cfg, config


def peer_step(
    steps: Steps, args: argparse.Namespace, cfg: Any, full: dict[str, Any]
) -> dict[str, Any] | None:
    """Torch-Pruning's magnitude pruner (L1, per-layer uniform ratio, DepGraph coupling) at
    ``--finetune-target`` of the FLOPs (the ratio found by bisection), fine-tuned like the
    criteria; None when ``torch_pruning`` is not installed."""
    try:
        import torch_pruning as tp
    except ImportError:
        log.warning("torch-pruning is not installed: peer step skipped (pip install torch-pruning)")
        return None
    space = data_space(cfg)
    source, _ = load_source(full["dir"], space)
    budget = args.finetune_target * count_flops(space, space.max())
    x = torch.zeros(1, *space.input_shape)

    def pruned(ratio: float) -> torch.nn.Module:
        m = copy.deepcopy(source)
        imp = tp.importance.MagnitudeImportance(p=1)
        tp.pruner.MagnitudePruner(
            m, x, importance=imp, pruning_ratio=ratio, ignored_layers=[m.classifier]
        ).step()
        return m

    def flops_of(m: torch.nn.Module) -> int:
        _, config = space_for_widths(cfg, space, tp_widths(m, space))
        return count_flops(config.space, config)

    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flops_of(pruned(mid)) <= budget else (mid, hi)
    model = pruned(hi)
    run_cfg, config = space_for_widths(cfg, space, tp_widths(model, space))
    run_cfg = copy.deepcopy(run_cfg)
    with open_dict(run_cfg):
        run_cfg.retrain.epochs = args.finetune_epochs
        run_cfg.retrain.optim = finetune_optim(args, run_cfg)
    if args.kd:
        run_cfg.retrain.kd.teacher = str(Path(full["dir"]) / "export")
    net = build_pruned(config.space, config)
    net.load_state_dict(model.state_dict(), strict=True)
    out = steps.root / "finetune" / "torch_pruning_magnitude"
    init = {
        "recalib_batches": args.recalib_batches,
        "kind": "torch-pruning",
        "importance": "magnitude-l1",
        "ratio": hi,
        "from": _source_id(full)["sha256"],
        "version": tp.__version__,
    }

    def compute() -> dict[str, Any]:
        data = build_datasets(run_cfg.data)
        if args.recalib_batches:  # as prune.recalib_batches does for the criteria
            n, size = args.recalib_batches, args.batch_size
            recalibrate_bn(
                net, recalibration_batches(data.train, n, size, augment=False, seed=args.seed)
            )
        loader = make_loader(data.search, 500, train=False)
        before = evaluate(net, loader)[0] if len(data.search) else None
        r = retrain(run_cfg, out, config, start=(net, init))
        return {
            "criterion": f"torch-pruning {tp.__version__} magnitude",
            "flops_ratio": r["flops_ratio"],
            "before": before,
            "test_accuracy": r["test_accuracy"],
            "dir": str(out),
        }

    identity = {"init": init, "run": OmegaConf.to_container(run_cfg, resolve=True)}
    return steps.run("finetune/torch_pruning_magnitude", identity, compute)


def allocate_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | criterion | key | FLOPs | benchmark acc % | percentile % |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["target"], r["criterion"])):
        lines.append(
            f"| {r['target']:.2f} | {r['criterion']} | `{r['key']}` | {r['flops_ratio']:.3f} | "
            f"{r['accuracy']:.2f} | {r['percentile']:.1f} |"
        )
    return "\n".join(lines)


def finetune_markdown(rows: list[dict[str, Any]], full: dict[str, Any]) -> str:
    base = full["test_accuracy"]
    lines = [
        f"Unpruned: test accuracy {100 * base:.2f} %.\n",
        "| method | FLOPs | search acc % before fine-tuning | test acc % | vs unpruned |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        before = "-" if r.get("before") is None else f"{100 * r['before']:.2f}"
        lines.append(
            f"| {r['criterion']} | {r['flops_ratio']:.3f} | {before} | "
            f"{100 * r['test_accuracy']:.2f} | {100 * (r['test_accuracy'] - base):+.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen steps; returns each step's result by name."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    options = criterion_options(args)
    steps = Steps(Path(args.out_root) / args.name)
    out: dict[str, Any] = {}
    md: list[str] = []
    if "allocate" in args.steps:
        if not args.results:
            raise SystemExit("the allocate step needs --results (Results_MobileNet.json)")
        cfg = compose(args, args.alloc_model)
        full = full_step(steps, cfg, f"full_{args.alloc_model}", args.full_epochs, args.alloc_from)
        out["allocate"] = allocate_step(steps, args, cfg, full, options)
        md += [
            f"## Global allocation on {args.alloc_model}, judged by the benchmark\n",
            allocate_markdown(out["allocate"]),
            "",
        ]
    if {"full", "finetune", "peer"} & set(args.steps):
        cfg = compose(args, args.finetune_model)
        name = f"full_{args.finetune_model}"
        full = full_step(steps, cfg, name, args.full_epochs, args.finetune_from)
        out["full"] = full
        rows = finetune_step(steps, args, cfg, full, options) if "finetune" in args.steps else []
        peer = peer_step(steps, args, cfg, full) if "peer" in args.steps else None
        rows += [peer] if peer else []
        out["finetune"] = rows
        if rows:
            md += [
                f"## Prune and fine-tune {args.finetune_model} at {args.finetune_target:g} of "
                f"the FLOPs, {args.finetune_epochs} epochs{' with KD' if args.kd else ''}\n",
                finetune_markdown(rows, full),
                "",
            ]
    text = "\n".join(md)
    print(text)
    steps.root.mkdir(parents=True, exist_ok=True)
    (steps.root / "prune.md").write_text(text)
    return out


if __name__ == "__main__":
    main()
