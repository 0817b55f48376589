"""An LSTM controller trained by REINFORCE (``search.algorithm=rl``; beyond MetaPruning, Liu et
al., ICCV 2019, sec. 3.3, which searches with a GA).

After "Where to Prune: Using LSTM to Guide End-to-end Pruning" (an LSTM that learns a network's
hierarchy and emits a pruning decision per layer, trained with policy gradients; Zoph & Le's
controller): the LSTM walks the genes in network order and emits one width choice per gene, a
softmax over that gene's choices; its input at gene ``i`` is an embedding of the choice made at
gene ``i - 1`` (a start token at the first) plus, when the scorer offers per-gene feature vectors
(``scorer.gene_features()``, an ``(n_genes, d)`` array: the proxy scorer's graph-encoded
PruningNet's gene embeddings; ``rl.gene_features``), a linear map of gene ``i``'s vector.  Each generation samples
configs until ``population`` new feasible ones are found (or ``population x max_redraws``
samples were drawn); the engine scores the new ones, and one REINFORCE step (Williams, 1992;
Adam) follows on the generation's distinct samples: loss = -mean(advantage x log-prob) -
``entropy_weight`` x mean entropy, with the advantage the reward less a moving-average baseline
(decay ``baseline_decay``).  Departures, each for a search that never scores a network twice:

* each distinct config counts once per update, however often it was sampled (counting every
  repeat, the policy collapsed onto a few networks and found no new ones long before the
  budget was spent: a run on the CBM MobileNet space at 50 % FLOPs scored 779 of its 1,004);
* slots the controller cannot fill with new networks within its draws are filled with the
  engine's random draws (as the GA's random fill), which stay out of the update (off-policy);
* the advantage is divided by the square root of a moving average of its square (same decay),
  so the step does not depend on the scale of the accuracy differences (a few tenths of a point
  near the top).

Rewards and constraints (rejection, with a penalty for the controller):

* a new feasible sample is scored once by the engine, and its score is its reward;
* a repeated feasible sample (visited in the stage) is not scored again: its cached score is its
  reward (the engine never scores a network twice);
* an infeasible sample is rejected (never scored: the engine's rule, and its proxy score would
  mean nothing under the bound) and enters the update with the lowest reward of the
  generation's feasible samples, so the controller learns to stay inside the bounds instead of
  spending draws outside them (with rejection alone it would get no signal there, and the best
  networks lie at the bound).

Stages are the GA's (one per target, :class:`~.ga.TargetStages`), each with a fresh controller.
Deterministic given the seed: a torch generator seeded from the engine's ``rng`` initialises the
controller and draws every sample; the controller's weights, its optimiser, the generator and
the baselines are the strategy's state (base64 of ``torch.save`` bytes in the checkpoint's JSON),
so a resumed search continues exactly.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from metaprune.search.constraints import Constraints
from metaprune.search.strategies.base import Genes, Stage
from metaprune.search.strategies.ga import TargetStages

if TYPE_CHECKING:
    from metaprune.search.evolution import Evolution


class Controller(nn.Module):
    """The LSTM policy over ``n_genes`` choices of ``n_choices`` each (module docstring);
    ``features`` are optional per-gene input vectors ``(n_genes, d)``.  Parameters are drawn
    from ``generator`` (uniform in +-1/sqrt(hidden), the LSTM's own rule; output biases 0)."""

    def __init__(
        self,
        n_genes: int,
        n_choices: int,
        hidden: int,
        generator: torch.Generator,
        features: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.n_genes, self.n_choices = n_genes, n_choices
        self.embed = nn.Embedding(n_choices + 1, hidden)  # the last row: the start token
        self.cell = nn.LSTMCell(hidden, hidden)
        self.head_w = nn.Parameter(torch.empty(n_genes, hidden, n_choices))
        self.head_b = nn.Parameter(torch.zeros(n_genes, n_choices))
        self.project = None if features is None else nn.Linear(features.shape[1], hidden, False)
        self.register_buffer("features", features)
        bound = 1.0 / math.sqrt(hidden)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name != "head_b":
                    p.uniform_(-bound, bound, generator=generator)

    def forward(
        self, n: int, actions: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` configs sampled with ``generator`` (or ``actions`` ``(n, n_genes)`` given):
        the choices, their log-probability and the policy's entropy summed over genes."""
        h = c = torch.zeros(n, self.cell.hidden_size)
        prev = torch.full((n,), self.n_choices, dtype=torch.long)
        logp, entropy, out = torch.zeros(n), torch.zeros(n), []
        for g in range(self.n_genes):
            x = self.embed(prev)
            if self.project is not None:
                x = x + self.project(self.features[g])
            h, c = self.cell(x, (h, c))
            logits = torch.log_softmax(h @ self.head_w[g] + self.head_b[g], dim=-1)
            if actions is None:
                a = torch.multinomial(logits.exp(), 1, generator=generator).squeeze(1)
            else:
                a = actions[:, g]
            logp = logp + logits.gather(1, a[:, None]).squeeze(1)
            entropy = entropy - (logits.exp() * logits).sum(dim=-1)
            out.append(a)
            prev = a
        return torch.stack(out, dim=1), logp, entropy

    def log_prob(self, genes: Genes) -> float:
        """Log-probability of one config under the policy."""
        with torch.no_grad():
            _, logp, _ = self(1, torch.tensor([list(genes)], dtype=torch.long))
        return float(logp[0])


def scorer_features(engine: Evolution) -> torch.Tensor | None:
    """The scorer's per-gene feature vectors (``gene_features()``, e.g. the proxy scorer's
    graph-encoded PruningNet's gene embeddings of the largest network), when it offers them and
    ``rl.gene_features`` is on; an array of another shape than ``(n_genes, d)`` is refused."""
    get = getattr(engine.scorer, "gene_features", None)
    raw = get() if engine.cfg.rl.gene_features and callable(get) else None
    if raw is None:
        return None
    feats = np.asarray(raw, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(engine.space.genes):
        raise ValueError(
            f"scorer.gene_features() must be (n_genes={len(engine.space.genes)}, d), got shape "
            f"{feats.shape}"
        )
    return torch.from_numpy(feats)


class ReinforceController(TargetStages):
    """``search.algorithm=rl``: an LSTM controller trained by REINFORCE (module docstring)."""

    name = "rl"

    def __init__(self, engine: Evolution) -> None:
        super().__init__(engine)
        self.generator = torch.Generator().manual_seed(int(engine.rng.integers(2**63)))
        self.features = scorer_features(engine)
        self.stage_name: str | None = None
        self.controller: Controller | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.baseline: float | None = None
        self.scale: float | None = None
        self.batch: list[Genes] = []
        self.rejected: list[Genes] = []

    def reset(self, stage_name: str) -> None:
        """A fresh controller, optimiser and baseline for stage ``stage_name``."""
        sp, r = self.engine.space, self.cfg.rl
        self.controller = Controller(
            len(sp.genes), len(sp.ratios), r.hidden, self.generator, self.features
        )
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=r.lr)
        self.stage_name, self.baseline, self.scale = stage_name, None, None

    def propose(self, stage: Stage) -> list[Genes]:
        if stage.name != self.stage_name or self.controller is None:
            self.reset(stage.name)
        assert self.controller is not None
        eng, need = self.engine, self.cfg.population
        limit, drawn = need * self.cfg.max_redraws, 0
        new: list[Genes] = []
        seen: set[tuple[int, ...]] = set()
        self.batch, self.rejected = [], []
        while len(new) < need and drawn < limit:
            with torch.no_grad():
                acts, _, _ = self.controller(min(need, limit - drawn), generator=self.generator)
            genes = acts.tolist()
            configs = [eng.space.config(g) for g in genes]
            ok = Constraints.satisfied(eng.constraints.evaluate(configs), stage.bounds)
            for g, c, feasible in zip(genes, configs, ok, strict=True):
                drawn += 1
                if not feasible:
                    self.rejected.append(g)
                    continue
                key = c.width_tuple()
                if key not in eng.visited:
                    eng.visited.add(key)
                    new.append(g)
                if key not in seen:
                    seen.add(key)
                    self.batch.append(g)
                if len(new) == need:
                    break
        return new + eng.draw_random(need - len(new), stage)

    def survivors(self, kids: list[Genes]) -> list[Genes]:
        """One REINFORCE step on the generation's samples, now that the new ones are scored."""
        eng = self.engine
        rewards = [float(eng.row(g)["accuracy"]) for g in self.batch]
        if rewards:
            rewards += [min(rewards)] * len(self.rejected)
            self.update(self.batch + self.rejected, rewards)
        self.batch, self.rejected = [], []
        return kids

    def update(self, samples: list[Genes], rewards: list[float]) -> None:
        """One policy-gradient step on ``samples`` with their ``rewards``."""
        assert self.controller is not None and self.optimizer is not None
        r, decay = np.asarray(rewards, dtype=np.float64), self.cfg.rl.baseline_decay
        if self.baseline is None or self.scale is None:
            self.baseline, self.scale = float(r.mean()), float(r.var())
        adv = r - self.baseline
        adv = adv / math.sqrt(self.scale) if self.scale > 0 else np.zeros_like(adv)
        acts = torch.tensor(samples, dtype=torch.long)
        _, logp, entropy = self.controller(len(samples), acts)
        advantage = torch.from_numpy(adv.astype(np.float32))
        loss = -(advantage * logp).mean() - self.cfg.rl.entropy_weight * entropy.mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scale = decay * self.scale + (1 - decay) * float(np.mean((r - self.baseline) ** 2))
        self.baseline = decay * self.baseline + (1 - decay) * float(r.mean())

    def state_dict(self) -> dict[str, Any]:
        blob: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.controller is not None and self.optimizer is not None:
            blob["controller"] = self.controller.state_dict()
            blob["optimizer"] = self.optimizer.state_dict()
        buf = io.BytesIO()
        torch.save(blob, buf)
        return {
            "stage": self.stage_name,
            "baseline": self.baseline,
            "scale": self.scale,
            "torch": base64.b64encode(buf.getvalue()).decode("ascii"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        blob = torch.load(io.BytesIO(base64.b64decode(state["torch"])), weights_only=True)
        self.controller = self.optimizer = None
        self.stage_name = None
        if state["stage"] is not None:
            self.reset(state["stage"])  # draws initial weights: the generator is set after
            assert self.controller is not None and self.optimizer is not None
            self.controller.load_state_dict(blob["controller"])
            self.optimizer.load_state_dict(blob["optimizer"])
        self.generator.set_state(blob["generator"])
        self.baseline, self.scale = state["baseline"], state["scale"]
