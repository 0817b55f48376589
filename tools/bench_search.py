"""Benchmark of search candidate scoring (MetaPruning sec. 3.3 proxy): speed and fidelity.

Four parts (the timings measured side by side in one run):

``timing``  candidates scored per second (generation + BN recalibration + evaluation) at CIFAR-10
            sizes (3x32x32, 10 classes) for ResNet-20, MobileNetV2 and the Channel-Bench-Macro
            MobileNet (the ground-truth benchmark's scorer settings) with an untrained
            PruningNet: the plain path (``metaprune.pruningnet.training.score_config``: build, load, recalibrate,
            evaluate with batches of 256) against :class:`~metaprune.search.ProxyScorer` without
            racing, on the same candidates and images; plus the fast scorer's time shares, and
            the fast scorer with ``--stack`` candidates per forward pass and in bf16 autocast
            (``search.scorer.amp``: the default on CUDA and on a CPU with native bf16).
``compare`` on Fashion-MNIST (28x28) with a briefly trained ResNet-20 PruningNet:
            the paper's GA (population 50, top-10 parents, ``--generations``) with the racing
            scorer under 0.5 of max FLOPs produces the candidate stream; the candidates racing
            stopped (and a sample of the survivors) are re-scored by full evaluation, a random
            sample by the plain path for its time; reports seconds per candidate, speed-up and
            Kendall tau against full evaluation, whether the top-k leaders keep their order, and
            the winner at 50% FLOPs against the uniform-width config of equal or higher FLOPs.
``bound``   on the GA stream of a ``compare`` run (``--stream``, same ``--pruningnet``): how
            well a candidate's score can be predicted from its first images at all (what
            limits racing), by Kendall tau over held-out halves of the stream.
``padding`` on the GA stream of a ``compare`` run (``--stream``): the FLOPs overhead of scoring
            waves of K candidates in one stacked network (``--stack`` in ``timing``).

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
from metaprune.pruningnet import create_pruningnet, load_pruningnet
from metaprune.pruningnet.training import score_config
from metaprune.search import ProxyScorer, SearchConfig, default_costs, run_search
from metaprune.search.config import ScorerConfig
from metaprune.search.scoring.racing import RaceHistory, stage_ends


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


def fast_scores(scorer: ProxyScorer, configs) -> tuple[list[float], float]:
    t0 = time.process_time()
    scores = scorer.score(configs)
    return scores, time.process_time() - t0


def shares(t: dict) -> str:
    total = t["generate"] + t["recalibrate"] + t["evaluate"]
    return " / ".join(f"{100 * t[k] / total:.0f}%" for k in ("generate", "recalibrate", "evaluate"))


def timing(args: argparse.Namespace) -> list[str]:
    """Plain vs fast (no racing) at CIFAR-10 sizes, untrained PruningNet."""
    lines = [
        "| model | candidates | recal + eval images | plain s/cand | fast s/cand | speed-up "
        f"| fast cand/s | fast: generate / recalibrate / evaluate | fast, stack {args.stack}: "
        "s/cand | stacked / fast time | stacked: max score change | fast, bf16: s/cand "
        "| fp32 / bf16 time | bf16: max score change |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    g = torch.Generator().manual_seed(0)
    for name, n, n_rec, n_eval in (
        ("resnet20", args.timing_candidates, 2048, 6000),
        ("mobilenet_v2", max(2, args.timing_candidates // 2), 1024, 2000),
        ("cbm_mobilenet", max(2, args.timing_candidates // 2), 1024, 5000),
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
        s_fast, t_fast = fast_scores(fast, configs)
        stacked = ProxyScorer(
            pnet, rebatch(recal, 256), images, labels, racing=False, stack=args.stack
        )
        s_stack, t_stack = fast_scores(stacked, configs)
        half = ProxyScorer(
            pnet, rebatch(recal, 256), images, labels, racing=False, amp_dtype=torch.bfloat16
        )
        s_half, t_half = fast_scores(half, configs)
        change = max(abs(a - b) for a, b in zip(s_fast, s_stack, strict=True))
        change_half = max(abs(a - b) for a, b in zip(s_fast, s_half, strict=True))
        t = fast.timings
        lines.append(
            f"| {name} | {n} | {n_rec} + {n_eval} | {t_plain / n:.2f} | {t_fast / n:.2f} "
            f"| {t_plain / t_fast:.2f}x | {n / t_fast:.2f} | {shares(t)} | {t_stack / n:.2f} "
            f"| {t_stack / t_fast:.2f} | {change:.4f} | {t_half / n:.2f} "
            f"| {t_fast / t_half:.2f}x | {change_half:.4f} |"
        )
        print(lines[-1], flush=True)
    return lines


def fmnist_space():
    """The ResNet-20 space of ``compare`` (Fashion-MNIST: 1x28x28, 10 classes)."""
    return create_space("resnet20", stem="cifar", in_chans=1, input_size=28, num_classes=10)


def padding(args: argparse.Namespace) -> list[str]:
    """FLOPs of stacked waves (every member padded to the wave's widest widths) against their
    members' own FLOPs, on the candidate stream of a ``compare`` run (``--stream``): each
    generation's candidates in waves of K, in the order scored and in gene order (what
    ``ProxyScorer`` does with ``stack > 1``).  Pure arithmetic of the cost model."""
    from metaprune.cost import cost_model

    space = fmnist_space()
    cm = cost_model(space)
    rows = json.loads(Path(args.stream).read_text())["rows"]
    gens = [
        [space.config(r["genes"]) for r in g]
        for _, g in itertools.groupby(rows, key=lambda r: r["generation"])
    ]

    def ratio(k: int, key) -> float:
        stacked = own = 0
        for gen in gens:
            ordered = sorted(gen, key=key) if key else gen
            for w in range(0, len(ordered), k):
                wave = ordered[w : w + k]
                wide = space.config(
                    [max(c.indices[i] for c in wave) for i in range(len(space.genes))]
                )
                widths = [space.widths(c) for c in wave]
                assert space.widths(wide) == {g: max(x[g] for x in widths) for g in widths[0]}
                stacked += len(wave) * cm.flops(wide)
                own += sum(cm.flops(c) for c in wave)
        return stacked / own

    lines = [
        f"Stream: {args.stream} ({len(rows)} candidates, {len(gens)} generations)",
        "| K (stack) | FLOPs stacked / own, order scored | in gene order |",
        "|---:|---:|---:|",
    ]
    for k in (2, 4, 8):
        lines.append(f"| {k} | {ratio(k, None):.2f} | {ratio(k, lambda c: c.indices):.2f} |")
    print("\n".join(lines), flush=True)
    return lines


def brief_pruningnet(args: argparse.Namespace, data) -> Path:
    """A ResNet-20 PruningNet trained for ``--train-steps`` SGD steps of stochastic structure
    sampling on Fashion-MNIST (enough for candidates to score differently), saved with
    ``save_pruningnet``."""
    from metaprune.pruningnet import save_pruningnet

    space = fmnist_space()
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
    return save_pruningnet(Path(args.out) / "pruningnet.pt", pnet)


def fmnist_parts(args: argparse.Namespace):
    """The PruningNet (``--pruningnet``, else one trained briefly), the recalibration batches
    and the ordered search images of ``compare`` (Fashion-MNIST)."""
    # no augmentation: BN recalibrated on the plain training images
    data = build_datasets({"name": "fashion_mnist", "search_size": 0.1, "augment": False})
    path = args.pruningnet or brief_pruningnet(args, data)
    pnet = load_pruningnet(path).eval()
    if pnet.space.input_shape != tuple(data.input_shape):
        raise SystemExit(f"--pruningnet must be trained on Fashion-MNIST, space is {pnet.space}")
    loader = make_loader(data.train, 128, train=True, seed=0)
    recal = list(itertools.islice(loader, args.recal_images // 128))
    xs, ys = zip(*make_loader(data.search, 1000, train=False), strict=True)
    perm = torch.randperm(sum(len(y) for y in ys), generator=torch.Generator().manual_seed(0))
    images = torch.cat(xs)[perm][: args.eval_images]
    return pnet, recal, images, torch.cat(ys)[perm][: args.eval_images]


def bound(args: argparse.Namespace) -> list[str]:
    """How well any early stop can do: the GA stream of a ``compare`` run (``--stream``, the
    same ``--pruningnet``) fully evaluated, then each candidate of a random half predicted from
    its first m images (complete recalibration) by ``RaceHistory.estimate`` fitted on the other
    half; Kendall tau of the predictions against full evaluation, over 20 random halves."""
    pnet, recal, images, labels = fmnist_parts(args)
    space = pnet.space
    rows = json.loads(Path(args.stream).read_text())["rows"]
    configs = [space.config(r["genes"]) for r in rows]
    cache = Path(args.out) / f"bound_{Path(args.stream).stem}.npy"  # per stream
    correct = np.load(cache) if cache.exists() else None
    if correct is None or correct.shape != (len(configs), len(labels)):
        ref = ProxyScorer(pnet, recal, images, labels, racing=False)
        ref.score(configs)
        correct = np.stack(ref.last_correct)
        np.save(cache, correct)
    full = correct.mean(axis=1)
    lines = [
        f"Stream: {args.stream} ({len(configs)} candidates), {len(labels)} images",
        "| first images | share of the split | Kendall tau, mean of 20 halves | min |",
        "|---:|---:|---:|---:|",
    ]
    rng = np.random.default_rng(0)
    for m in stage_ends(len(labels), args.racing_slice)[:-1]:
        taus = []
        for _ in range(20):
            perm = rng.permutation(len(configs))
            fit, held = perm[: len(perm) // 2], perm[len(perm) // 2 :]
            hist = RaceHistory(space, len(labels))
            hist.add([configs[i] for i in fit], full[fit], list(correct[fit]))
            pred = [hist.estimate(correct[i, :m], configs[i].indices) for i in held]
            taus.append(kendall_tau(pred, full[held]))
        lines.append(f"| {m} | {m / len(labels):.3f} | {np.mean(taus):.3f} | {min(taus):.3f} |")
        print(lines[-1], flush=True)
    return lines


def compare(args: argparse.Namespace) -> list[str]:
    """Plain vs fast + racing on the candidate stream of a GA (Fashion-MNIST, trained).

    The GA runs with the racing scorer; its fully evaluated candidates *are* full-evaluation
    scores (same recalibration batches, cumulative statistics, whole split).  The candidates it
    stopped, and a sample of the survivors as a check, are re-scored by the fast scorer without
    racing (full evaluation), and a random sample by the plain ``score_config`` for its time."""
    pnet, recal, images, labels = fmnist_parts(args)
    space = pnet.space

    def scorer(racing: bool) -> ProxyScorer:
        return ProxyScorer(
            pnet,
            recal,
            images,
            labels,
            racing=racing,
            racing_slice=args.racing_slice,
            racing_top_k=args.top_k,
            racing_z=args.z,
            racing_recalib=args.racing_recalib,
        )

    # the candidate stream: the paper's GA (population, parents, children) with racing
    cfg = SearchConfig(generations=args.generations, targets=[0.5], tensorboard=False)
    out = Path(tempfile.mkdtemp(prefix="bench_search_"))
    racer = scorer(racing=True)
    run = run_search(space, racer, default_costs(space), cfg, out)
    shutil.rmtree(out, ignore_errors=True)
    rows = run.table()
    configs = [run.config(r) for r in rows]
    n, t = len(configs), racer.timings
    t_race = t["generate"] + t["recalibrate"] + t["evaluate"]
    stopped = [i for i, r in enumerate(rows) if not r["full"]]
    print(f"GA: {n} candidates, {len(stopped)} stopped, {t_race / n:.2f} s/cand", flush=True)

    # full evaluation of every candidate: a survivor of racing *is* one (checked on a sample);
    # the stopped ones are re-scored, unless an earlier run (same PruningNet and images) did
    rng = np.random.default_rng(0)
    survivors = [i for i in range(n) if rows[i]["full"]]
    check = sorted(int(i) for i in rng.choice(survivors, min(args.check, len(survivors)), False))
    known = {}
    if args.full_from:
        old = json.loads(Path(args.full_from).read_text())
        known = {tuple(r["widths"]): f for r, f in zip(old["rows"], old["full"], strict=True)}
    full = [known.get(tuple(r["widths"]), r["accuracy"]) for r in rows]
    unknown = [i for i in stopped if tuple(rows[i]["widths"]) not in known]
    redo = sorted({*unknown, *check})
    ref = scorer(racing=False)
    redo_scores, t_full = fast_scores(ref, [configs[i] for i in redo])
    for i, s in zip(redo, redo_scores, strict=True):
        full[i] = s
    drift = max((abs(rows[i]["accuracy"] - full[i]) for i in check), default=0.0)
    print(f"full: {len(unknown)} stopped re-scored, {len(stopped) - len(unknown)} known")

    sample = sorted(int(i) for i in rng.choice(n, min(args.plain, n), replace=False))
    plain, t_plain = plain_scores(pnet, [configs[i] for i in sample], recal, images, labels)
    plain_drift = max(abs(p - full[i]) for p, i in zip(plain, sample, strict=True))
    t_plain /= len(sample)
    print(f"plain: {t_plain:.2f} s/cand", flush=True)

    race = [r["accuracy"] for r in rows]
    k = args.top_k
    leaders = sorted(range(n), key=lambda i: -full[i])[:k]
    in_order = leaders == sorted(range(n), key=lambda i: -race[i])[:k]
    best = run.winners[0]["best"]
    max_flops = run.meta["max_cost"]["flops"]
    uniform = next(
        (r, space.uniform(r))
        for r in space.ratios
        if count_flops(space, space.uniform(r)) >= best["flops"]
    )
    u_score = score_config(pnet, uniform[1], recal, batches(images, labels, 256))
    lines = [
        f"Candidates: {n} (the GA's stream with the racing scorer: population {cfg.population}, "
        f"{cfg.generations} generations, top {cfg.parents} parents, target 0.5 of max FLOPs, "
        f"plus {len(run.meta['baselines'])} uniform baselines). Recalibration "
        f"{len(recal) * 128} training images in batches of 128 (every scorer), evaluation "
        f"{len(labels)} search-split images. Racing: recalibration share {args.racing_recalib}, "
        f"first slice {args.racing_slice}, top-k {k}, z {args.z}, paired test.",
        "",
        "| scorer | CPU s / candidate | speed-up vs plain | Kendall tau vs full "
        f"| top-{k} in order | stopped early | images evaluated "
        "| generate / recalibrate / evaluate |",
        "|---|---:|---:|---:|---|---:|---:|---|",
        f"| plain full evaluation (`score_config`; {len(sample)} sampled candidates; "
        f"max difference to full {plain_drift:.1e}) | {t_plain:.2f} | 1.00x | 1.000 | yes "
        "| 0 | 100% | |",
        f"| fast, full evaluation (no racing; {len(redo)} candidates: stopped ones not scored "
        f"by `--full-from`, and {len(check)} sampled survivors, whose scores equal the racing "
        f"run's to {drift:.1e}) "
        f"| {t_full / len(redo):.2f} | {t_plain * len(redo) / t_full:.2f}x | 1.000 | yes | 0 "
        f"| 100% | {shares(ref.timings)} |",
        f"| fast + racing (the whole stream) | {t_race / n:.2f} | {t_plain * n / t_race:.2f}x "
        f"| {kendall_tau(full, race):.3f} | {'yes' if in_order else 'no'} "
        f"| {len(stopped)} of {n} | {100 * t['images'] / (n * len(labels)):.0f}% "
        f"| {shares(t)} |",
        "",
        f"Winner at <= 50% of max FLOPs: {best['flops'] / 1e6:.2f} MFLOPs "
        f"({best['flops'] / max_flops:.2f} of max), proxy top-1 {full[best['id']]:.4f} (full "
        f"evaluation); uniform width {uniform[0]} ({count_flops(space, uniform[1]) / 1e6:.2f} "
        f"MFLOPs, {count_flops(space, uniform[1]) / max_flops:.2f} of max): {u_score:.4f}.",
    ]
    (Path(args.out) / "compare.json").write_text(json.dumps({"full": full, "rows": rows}))
    for line in lines:
        print(line)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--part", choices=("timing", "compare", "padding", "bound", "all"), default="all"
    )
    p.add_argument("--pruningnet", help="trained ResNet-20 / Fashion-MNIST PruningNet (compare)")
    p.add_argument(
        "--train-steps", type=int, default=150, help="compare without --pruningnet: train steps"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timing-candidates", type=int, default=6)
    p.add_argument("--stack", type=int, default=4, help="timing: candidates per forward pass")
    p.add_argument("--recal-images", type=int, default=2048)
    p.add_argument("--eval-images", type=int, default=6000)
    p.add_argument("--generations", type=int, default=6, help="compare: GA generations")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--racing-slice", type=float, default=0.0625)
    p.add_argument("--racing-recalib", type=float, default=0.25)
    p.add_argument(
        "--z", type=float, default=ScorerConfig.racing_z, help="compare: racing confidence"
    )
    p.add_argument("--check", type=int, default=10, help="compare: survivors re-scored in full")
    p.add_argument("--plain", type=int, default=8, help="compare: candidates timed plain")
    p.add_argument(
        "--full-from",
        help="compare: compare.json of an earlier run (same PruningNet and images) whose full "
        "scores are reused for the networks it scored",
    )
    p.add_argument("--stream", help="padding, bound: compare.json of a compare run (its stream)")
    p.add_argument("--out", default="outputs/bench_search")
    args = p.parse_args()
    if args.part in ("padding", "bound") and not args.stream:
        p.error(f"--part {args.part} needs --stream")
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.part in ("timing", "all"):
        timing(args)
    if args.part in ("compare", "all"):
        compare(args)
    if args.part == "padding" or (args.part == "all" and args.stream):
        padding(args)
    if args.part == "bound":
        bound(args)


if __name__ == "__main__":
    main()
