"""Results of a search on disk, and the notebook API over them (``load_search``).

A search directory holds

* ``scored.jsonl`` / ``scored.csv``: every scored configuration once (genes, widths, FLOPs,
  params, latency where known, proxy accuracy, stage, generation);
* ``winners.json``: the best configuration per target (or under the constraints), with its
  config JSON; ``pareto.json``: the non-dominated front; ``baselines.json``: the uniform-width
  configs scored by the same proxy; ``pareto.png``: accuracy against the primary cost;
* ``search.json``: space, config, cost ranges, resolved bounds, the costs of the front
  (written when the search ends);
* ``search_state.json``: the resume checkpoint; ``tb/``: TensorBoard scalars.

Every file is written atomically.

Winners and fronts come from *fully evaluated* rows only: a racing scorer marks a candidate it
stopped early ``full: false`` and scores it by a fitted estimate (``scoring/racing.py``), which
ranks it for the GA but never makes it a winner or a front member.  Rows without the flag
(scorers without racing) count as fully evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaprune.io import (
    CheckpointError,
    atomic_save_png,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from metaprune.search.constraints import Bound, parse_bound
from metaprune.search.pareto import pareto_mask
from metaprune.space import ChannelConfig, ChannelSpace

TABLE_JSONL, TABLE_CSV, META = "scored.jsonl", "scored.csv", "search.json"
WINNERS, PARETO, BASELINES, PLOT = "winners.json", "pareto.json", "baselines.json", "pareto.png"


def bounds_from_json(specs: Sequence[Mapping[str, Any]]) -> list[Bound]:
    return [Bound(d["cost"], d["lower"], d["upper"]) for d in specs]


def fully_evaluated(row: Mapping[str, Any]) -> bool:
    """Whether a row's score is a full evaluation (not a racing scorer's early-stop estimate)."""
    return bool(row.get("full", True))


def _meets(row: Mapping[str, Any], bounds: Sequence[Bound]) -> bool:
    for b in bounds:
        v = row.get(b.cost)
        if v is None or not bool(b.mask(np.array([float(v)]))[0]):
            return False
    return True


class SearchRun:
    """A search's scored table with its winners, front and baselines (finished or in memory)."""

    def __init__(
        self,
        run_dir: str | Path,
        meta: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        space: ChannelSpace | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.meta = dict(meta)
        self.rows = [dict(r) for r in rows]
        self._space = space

    # -- identity -------------------------------------------------------------------------
    @property
    def space(self) -> ChannelSpace:
        """The channel space of the search (rebuilt from ``search.json`` when loaded)."""
        if self._space is None:
            from metaprune.models import space_from_description

            self._space = space_from_description(self.meta["space"], str(self.run_dir / META))
        return self._space

    @property
    def cost(self) -> str:
        """The primary cost (``search.cost``)."""
        return self.meta["config"]["cost"]

    def config(self, row: Mapping[str, Any]) -> ChannelConfig:
        """The :class:`ChannelConfig` of a table row (or winner)."""
        return self.space.config(row["genes"])

    # -- table --------------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """Every scored configuration, one dict per row, in scoring order."""
        return [dict(r) for r in self.rows]

    def dataframe(self) -> Any:
        """The table as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError(
                "SearchRun.dataframe() needs pandas (pip install pandas); "
                "SearchRun.table() gives the same rows as dicts"
            ) from e
        return pd.DataFrame(self.table())

    def resolve(self, **spec: Any) -> list[Bound]:
        """Bounds from ``cost=value`` specs, read as search constraints are
        (:mod:`metaprune.search.constraints`: ``0.5`` or ``"50%"`` of the max FLOPs,
        ``"300M"``, ``latency="2.5ms"``)."""
        out = []
        for name, value in spec.items():
            if name not in self.meta["max_cost"]:
                raise ValueError(f"unknown cost {name!r}; this search has {self.meta['costs']}")
            out.append(parse_bound(name, value, self.meta["max_cost"][name], f"{name}={value!r}"))
        return out

    def select(self, bounds: Sequence[Bound], full: bool = False) -> list[dict[str, Any]]:
        """Rows meeting every bound (``full``: only the fully evaluated ones)."""
        return [r for r in self.rows if _meets(r, bounds) and (not full or fully_evaluated(r))]

    def best(self, constrained: bool = False, **spec: Any) -> dict[str, Any] | None:
        """The most accurate fully evaluated config meeting ``spec`` (e.g. ``flops=0.5``,
        ``flops=[0.45, 0.5]``, ``params="1M"``) and, with ``constrained``, the search's own
        constraints too (the table also holds the uniform baselines, scored whatever the
        constraints); ties go to the cheaper one.  ``None`` if none."""
        own = bounds_from_json(self.meta["constraints"]) if constrained else []
        return self._best([*own, *self.resolve(**spec)])

    def _best(self, bounds: Sequence[Bound]) -> dict[str, Any] | None:
        rows = self.select(bounds, full=True)
        if not rows:
            return None
        return min(rows, key=lambda r: (-r["accuracy"], r[self.cost], r["id"]))

    def pareto(self, costs: Sequence[str] = ("flops",), **spec: Any) -> list[dict[str, Any]]:
        """Non-dominated rows (max accuracy, min ``costs``) among the fully evaluated ones
        meeting ``spec``, sorted by the first cost."""
        costs = [costs] if isinstance(costs, str) else list(costs)
        rows = self.select(self.resolve(**spec), full=True)
        rows = [r for r in rows if all(c in r for c in costs)]
        if not rows:
            return []
        acc = np.array([r["accuracy"] for r in rows])
        cst = np.array([[r[c] for c in costs] for r in rows], dtype=np.float64)
        front = [r for r, keep in zip(rows, pareto_mask(acc, cst), strict=True) if keep]
        return sorted(front, key=lambda r: (r[costs[0]], -r["accuracy"], r["id"]))

    # -- results ----------------------------------------------------------------------------
    @property
    def front(self) -> list[dict[str, Any]]:
        """The search's front over its strategy's front costs (``nsga2``: its objectives;
        ``ga``: the primary cost), among the fully evaluated rows meeting its constraints."""
        rows = self.select(bounds_from_json(self.meta["constraints"]))
        run = SearchRun(self.run_dir, self.meta, rows, self._space)
        return run.pareto(self.meta["front_costs"])

    @property
    def winners(self) -> list[dict[str, Any]]:
        """One entry per target (or one under the constraints when there are no targets): the
        target, its bounds and the best fully evaluated row meeting them (``None`` if none
        does)."""
        targets = self.meta["targets"] or [{"target": None, "bounds": self.meta["constraints"]}]
        out = []
        for t in targets:
            row = self._best(bounds_from_json(t["bounds"]))
            out.append({"target": t["target"], "bounds": t["bounds"], "best": row})
        return out

    @property
    def baselines(self) -> list[dict[str, Any]]:
        """The uniform-width configs with their scores (``ratio`` added to each row)."""
        by_key = {tuple(r["widths"]): r for r in self.rows}
        return [
            {"ratio": b["ratio"], **by_key[tuple(b["widths"])]}
            for b in self.meta["baselines"]
            if tuple(b["widths"]) in by_key
        ]

    def __repr__(self) -> str:
        return (
            f"SearchRun({self.run_dir}, {self.meta['config']['algorithm']}, "
            f"{len(self.rows)} scored, {len(self.winners)} winner(s))"
        )


SearchResult = SearchRun
"""What :func:`metaprune.search.search` returns: the same type ``load_search`` gives."""


def load_search(run_dir: str | Path) -> SearchRun:
    """A finished search from its directory (``search.json`` and ``scored.jsonl``)."""
    run_dir = Path(run_dir)
    if not (run_dir / META).is_file():
        hint = (
            " (it has a checkpoint: resume the search with resume=True)"
            if (run_dir / "search_state.json").is_file()
            else ""
        )
        raise CheckpointError(f"{run_dir} holds no finished search: {META} is missing{hint}")
    meta = read_json(run_dir / META)
    rows = []
    for i, line in enumerate((run_dir / TABLE_JSONL).read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{run_dir / TABLE_JSONL}: line {i + 1} is corrupt") from e
    return SearchRun(run_dir, meta, rows)


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "-".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()})
    return buf.getvalue()


def write_results(
    out_dir: str | Path, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> SearchRun:
    """Write the table, winners, front, baselines, the plot and ``search.json`` (last: its
    presence marks a finished search)."""
    out = Path(out_dir)
    atomic_write_text(out / TABLE_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / TABLE_CSV, _csv(rows))
    run = SearchRun(out, meta, rows)
    space = run.space
    winners = [
        {**w, "config": space.config(w["best"]["genes"]).to_dict() if w["best"] else None}
        for w in run.winners
    ]
    atomic_write_json(out / WINNERS, winners)
    atomic_write_json(out / PARETO, run.front)
    atomic_write_json(out / BASELINES, run.baselines)
    plot_search(run, out / PLOT)
    atomic_write_json(out / META, meta)
    return run


def plot_search(run: SearchRun, path: str | Path) -> Path:
    """PNG of proxy accuracy against the primary cost: every scored config, the front, the
    uniform-width baselines and the winners."""
    from matplotlib.figure import Figure

    cost = run.cost
    scale, unit = (1e6, "M") if cost in ("flops", "params") else (1.0, "ms")
    x = np.array([r[cost] for r in run.rows], dtype=np.float64) / scale
    y = np.array([r["accuracy"] for r in run.rows])
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.subplots()
    ax.scatter(x, y, s=8, c="0.7", label=f"scored ({len(run.rows)})")
    front = run.pareto([cost])
    ax.step(
        [r[cost] / scale for r in front],
        [r["accuracy"] for r in front],
        where="post",
        c="C0",
        lw=1.5,
        label="Pareto front",
    )
    base = run.baselines
    if base:
        ax.plot(
            [b[cost] / scale for b in base],
            [b["accuracy"] for b in base],
            "s--",
            c="C3",
            label="uniform width",
        )
        for b in base:
            ax.annotate(f"{b['ratio']:g}", (b[cost] / scale, b["accuracy"]), fontsize=7)
    wins = [w["best"] for w in run.winners if w["best"]]
    if wins:
        ax.scatter(
            [w[cost] / scale for w in wins],
            [w["accuracy"] for w in wins],
            marker="*",
            s=160,
            c="C1",
            edgecolors="k",
            zorder=5,
            label="winners",
        )
    label = {"flops": "FLOPs (MACs)", "params": "parameters", "latency": "latency"}[cost]
    ax.set_xlabel(f"{label} [{unit}]")
    ax.set_ylabel("proxy top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_save_png(fig, path)
