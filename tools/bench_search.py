"""Benchmark of search candidate scoring (MetaPruning sec. 3.3 proxy): speed and fidelity.

Two parts, each measured side by side in one run:

``timing``  candidates scored per second (generation + BN recalibration + evaluation) at CIFAR-10
            sizes (3x32x32, 10 classes) for ResNet-20 and MobileNetV2 with an untrained
            PruningNet: the plain path (``metaprune.train.score_config``: build, load, recalibrate,
            evaluate with batches of 256) against :class:`~metaprune.search.ProxyScorer` without
            racing, on the same candidates and images; plus the fast scorer's time shares.
``compare`` on Fashion-MNIST (28x28) with a briefly trained ResNet-20 PruningNet:
            a small GA with the racing scorer (targets 0.5 of max FLOPs) produces the candidate
            stream; the same candidates are then scored by the plain full evaluation, the fast
            scorer without racing, and with racing; reports seconds per candidate, speed-up and
            Kendall tau against full evaluation, whether the top-k leaders keep their order, and
            the winner at 50% FLOPs against the uniform-width config of equal or higher FLOPs.

Usage: ``python tools/bench_search.py --part all [--pruningnet outputs/<train run>]``: without
``--pruningnet`` (a PruningNet trained on Fashion-MNIST) ``compare`` first trains a ResNet-20
PruningNet for ``--train-steps`` steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metaprune import count_flops, create_space
from metaprune.cost.latency import kendall_tau
from metaprune.data import build_datasets, make_loader
from metaprune.pruningnet import create_pruningnet
from metaprune.search import ProxyScorer, SearchConfig, default_costs, run_search
from metaprune.train import load_pruningnet, score_config


def batches(x: torch.Tensor, y: torch.Tensor, bs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def rebatch(recal: list, bs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same recalibration images in batches of ``bs``."""
    return batches(torch.cat([x for x, _ in recal]), torch.cat([y for _, y in recal]), bs)


def plain_scores(pnet, configs, recal, images, labels, bs: int = 256) -> tuple[list[float], float]:
    """The reference: ``score_config`` per candidate (full split, batches of ``bs``)."""
    evals = batches(images, labels, bs)
    t0 = time.process_time()
    scores = [score_config(pnet, c, recal, evals) for c in configs]
    return scores, time.process_time() - t0


def fast_scores(scorer: ProxyScorer, configs) -> tuple[list[float], float, dict]:
    t0 = time.process_time()
    scores = scorer.score(configs)
    return scores, time.process_time() - t0, dict(scorer.timings)


def shares(t: dict) -> str:
    total = t["generate"] + t["recalibrate"] + t["evaluate"]
    return " / ".join(f"{100 * t[k] / total:.0f}%" for k in ("generate", "recalibrate", "evaluate"))


def timing(args: argparse.Namespace) -> list[str]:
    """Plain vs fast (no racing) at CIFAR-10 sizes, untrained PruningNet."""
    lines = [
        "| model | candidates | recal + eval images | plain s/cand | fast s/cand | speed-up "
        "| fast cand/s | fast: generate / recalibrate / evaluate |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    g = torch.Generator().manual_seed(0)
    for name, n, n_rec, n_eval in (
        ("resnet20", args.timing_candidates, 2048, 6000),
        ("mobilenet_v2", max(2, args.timing_candidates // 2), 1024, 2000),
    ):
        space = create_space(name, stem="cifar", num_classes=10)
        torch.manual_seed(0)
        pnet = create_pruningnet(space).eval()
        images = torch.randn(n_eval, 3, 32, 32, generator=g)
        labels = torch.randint(0, 10, (n_eval,), generator=g)
        recal = batches(torch.randn(n_rec, 3, 32, 32, generator=g), labels[:n_rec], 128)
        configs = [space.sample(np.random.default_rng(i)) for i in range(n)]
        _, t_plain = plain_scores(pnet, configs, recal, images, labels)
        fast = ProxyScorer(pnet, rebatch(recal, 256), images, labels, racing=False)
        _, t_fast, t = fast_scores(fast, configs)
        lines.append(
            f"| {name} | {n} | {n_rec} + {n_eval} | {t_plain / n:.2f} | {t_fast / n:.2f} "
            f"| {t_plain / t_fast:.2f}x | {n / t_fast:.2f} | {shares(t)} |"
        )
        print(lines[-1], flush=True)
    return lines


def brief_pruningnet(args: argparse.Namespace, data) -> Path:
    """A ResNet-20 PruningNet trained for ``--train-steps`` SGD steps of stochastic structure
    sampling on Fashion-MNIST (enough for candidates to score differently), saved as
    ``metaprune.train`` saves one."""
    from dataclasses import asdict

    from metaprune.io import atomic_torch_save
    from metaprune.train import FORMAT, PRUNINGNET_FILE

    space = create_space("resnet20", stem="cifar", in_chans=1, input_size=28, num_classes=10)
    torch.manual_seed(0)
    pnet = create_pruningnet(space).train()
    opt = torch.optim.SGD(pnet.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=args.train_steps)
    rng = np.random.default_rng(0)
    loader = make_loader(data.train, 128, train=True, seed=1)
    for step, (x, y) in zip(range(args.train_steps), itertools.cycle(loader), strict=False):
        loss = torch.nn.functional.cross_entropy(pnet(x, space.sample(rng)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0:
            print(f"train step {step}: loss {loss.item():.3f}", flush=True)
    path = Path(args.out) / PRUNINGNET_FILE
    state = {"space": space.describe(), "pruningnet": asdict(pnet.config)}
    atomic_torch_save(path, {"format": FORMAT, **state, "state_dict": pnet.state_dict()})
    return path


def compare(args: argparse.Namespace) -> list[str]:
    """Plain vs fast vs fast + racing on one GA candidate stream (Fashion-MNIST, trained)."""
    # no augmentation: BN recalibrated on the plain training images
    data = build_datasets({"name": "fashion_mnist", "search_size": 0.1, "augment": False})
    path = args.pruningnet or brief_pruningnet(args, data)
    pnet = load_pruningnet(path).eval()
    space = pnet.space
    if space.input_shape != tuple(data.input_shape):
        raise SystemExit(f"--pruningnet must be trained on Fashion-MNIST, space is {space}")
    loader = make_loader(data.train, 128, train=True, seed=0)
    recal = list(itertools.islice(loader, args.recal_images // 128))
    xs, ys = zip(*make_loader(data.search, 1000, train=False), strict=True)
    perm = torch.randperm(sum(len(y) for y in ys), generator=torch.Generator().manual_seed(0))
    images, labels = (
        torch.cat(xs)[perm][: args.eval_images],
        torch.cat(ys)[perm][: args.eval_images],
    )

    fast_recal = rebatch(recal, 256)

    def racer(racing: bool = True) -> ProxyScorer:
        return ProxyScorer(
            pnet,
            fast_recal,
            images,
            labels,
            racing=racing,
            racing_slice=args.racing_slice,
            racing_top_k=args.top_k,
        )

    # the candidate stream: a small GA with the racing scorer
    cfg = SearchConfig(
        population=args.population,
        generations=args.generations,
        parents=args.top_k,
        mutation_children=args.population // 2,
        crossover_children=args.population // 4,
        targets=[0.5],
        tensorboard=False,
    )
    out = Path(tempfile.mkdtemp(prefix="bench_search_"))
    t0 = time.process_time()
    run = run_search(space, racer(), default_costs(space), cfg, out)
    t_search = time.process_time() - t0
    rows = run.table()
    configs = [run.config(r) for r in rows]
    n = len(configs)
    print(f"GA: {n} candidates in {t_search:.0f} CPU s", flush=True)

    full, t_plain = plain_scores(pnet, configs, recal, images, labels)
    print(f"plain: {t_plain / n:.2f}s/cand", flush=True)

    def leaders_ok(scores: list[float]) -> str:
        """Is the top-k by full evaluation also the top-k, in the same order, by ``scores``?"""
        k = args.top_k
        order_full = sorted(range(n), key=lambda i: -full[i])[:k]
        order_fast = sorted(range(n), key=lambda i: -scores[i])[:k]
        return "yes" if order_full == order_fast else "no"

    lines = [
        f"Candidates: {n} (the stream of a GA with the racing scorer: population "
        f"{args.population}, {args.generations} generations, target 0.5 of max FLOPs, plus the "
        f"uniform baselines; the GA took {t_search:.0f} CPU s). Recalibration "
        f"{len(recal) * 128} training images, evaluation {len(labels)} search-split images.",
        "",
        "| scorer | CPU s / candidate | speed-up vs plain | Kendall tau vs full "
        f"| top-{args.top_k} in order | stopped early | images evaluated "
        "| generate / recalibrate / evaluate |",
        "|---|---:|---:|---:|---|---:|---:|---|",
        f"| plain full evaluation (`score_config`: recalibration batches of 128, evaluation "
        f"batches of 256) | {t_plain / n:.2f} | 1.00x | 1.000 | yes | 0 | 100% | |",
    ]
    racing_name = (
        f"fast + racing (recalibration share 0.25, first slice {args.racing_slice}, "
        f"top-k {args.top_k}, z 2)"
    )
    variants = [(racing_name, racer())]
    if args.no_racing:
        variants.insert(0, ("fast, no racing", racer(racing=False)))
    for name, scorer in variants:
        scores, t_s, t = fast_scores(scorer, configs)
        stopped = sum(1 for d in scorer.last_details if not d["full"])
        lines.append(
            f"| {name} | {t_s / n:.2f} | {t_plain / t_s:.2f}x | {kendall_tau(full, scores):.3f} "
            f"| {leaders_ok(scores)} | {stopped} | {100 * t['images'] / (n * len(labels)):.0f}% "
            f"| {shares(t)} |"
        )
        print(lines[-1], flush=True)
    lines.append("")
    best = run.winners[0]["best"]
    max_flops = run.meta["max_cost"]["flops"]
    uniform = next(
        (r, space.uniform(r))
        for r in space.ratios
        if count_flops(space, space.uniform(r)) >= best["flops"]
    )
    u_score = score_config(pnet, uniform[1], recal, batches(images, labels, 256))
    w_score = full[[r["id"] for r in rows].index(best["id"])]
    lines.append(
        f"Winner at <= 50% of max FLOPs: {best['flops'] / 1e6:.2f} MFLOPs "
        f"({best['flops'] / max_flops:.2f} of max), proxy top-1 {w_score:.4f} (full evaluation); "
        f"uniform width {uniform[0]} ({count_flops(space, uniform[1]) / 1e6:.2f} MFLOPs, "
        f"{count_flops(space, uniform[1]) / max_flops:.2f} of max): {u_score:.4f}."
    )
    (Path(args.out) / "compare.json").write_text(json.dumps({"full": full, "rows": rows}))
    shutil.rmtree(out, ignore_errors=True)
    for line in lines:
        print(line)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("timing", "compare", "all"), default="all")
    p.add_argument("--pruningnet", help="trained ResNet-20 / Fashion-MNIST PruningNet (compare)")
    p.add_argument(
        "--train-steps", type=int, default=150, help="compare without --pruningnet: train steps"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timing-candidates", type=int, default=6)
    p.add_argument("--recal-images", type=int, default=2048)
    p.add_argument("--eval-images", type=int, default=6000)
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--racing-slice", type=float, default=0.125)
    p.add_argument("--no-racing", action="store_true", help="compare: also time fast, no racing")
    p.add_argument("--out", default="outputs/bench_search")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.part in ("timing", "all"):
        timing(args)
    if args.part in ("compare", "all"):
        compare(args)


if __name__ == "__main__":
    main()
