"""Pruning a trained network by channel-importance criteria, then fine-tuning it.

MetaPruning (Liu et al., ICCV 2019) trains the pruned network from scratch; most practitioners
start from a trained network.  ``metaprune prune`` (:func:`prune`) takes a trained full-width
network of a registered family, scores every channel of every gene with a criterion (coupled
channels as one group: the channel space knows what is coupled), keeps the top channels at given
widths or allocates widths globally to a FLOPs / params target, copies the kept weights into
``build_pruned``'s plain network (no masks) and fine-tunes it with the retrain engine (optionally
distilling from the unpruned network).  The criteria, one a file under :mod:`.criteria`:

=============  ==========================================================================
``l1``         filter L1 norm (Li et al., ICLR 2017)
``bn_scale``   BN |gamma|, optional sparsity training (network slimming, ICCV 2017)
``fisher``     group Fisher importance, memory-normalised (Liu et al., ICML 2021)
``distortion`` output distortion on calibration batches (Gao et al., ICML 2019)
``lrf``        linearly replaceable filters + weights compensation (Joo et al., AAAI 2021)
``sss``        learnable channel and block factors, sparsity by modified APG (Huang & Wang,
               ECCV 2018); removes dead blocks on a space with depth genes
``ga``         genetic channel selection with a two-step approximate fitness (sources 002 f)
=============  ==========================================================================

Usage (the full-width network first, then its pruning; criterion options need ``+``)::

    metaprune retrain model=resnet56 data=cifar10 retrain.uniform=1.0
    metaprune prune model=resnet56 data=cifar10 prune.criterion=fisher prune.target=0.5 \
        prune.from=outputs/resnet56_cifar10/retrain/uniform1 prune.kd=true retrain.epochs=30 \
        +prune.options.batches=16

writes ``outputs/resnet56_cifar10/prune/fisher-flops0.5-kd/`` (``result.json``, ``export/``).

One module a job: :mod:`.channels` (where channels live, copying them), :mod:`.criterion` (the
interface and registry), :mod:`.allocate` (widths), :mod:`.training` (the criteria's sparsity
training), :mod:`.source` (the network to prune), :mod:`.config` (the ``prune`` block),
:mod:`.job` (:func:`prune`).
"""

from metaprune.prune import criteria  # noqa: F401  (registration)
from metaprune.prune.allocate import COSTS, allocate, cost_function, keep_for, keep_top
from metaprune.prune.channels import Keep, Scores, consumers, gene_masks, producers, prune_state
from metaprune.prune.config import DEFAULTS, PruneConfig
from metaprune.prune.criterion import (
    Criterion,
    CriterionError,
    list_criteria,
    make_criterion,
    register_criterion,
)
from metaprune.prune.job import prune, prune_label, prune_network
from metaprune.prune.source import PruneInputError, load_source

__all__ = [
    "COSTS",
    "DEFAULTS",
    "Criterion",
    "CriterionError",
    "Keep",
    "PruneConfig",
    "PruneInputError",
    "Scores",
    "allocate",
    "consumers",
    "cost_function",
    "gene_masks",
    "keep_for",
    "keep_top",
    "list_criteria",
    "load_source",
    "make_criterion",
    "producers",
    "prune",
    "prune_label",
    "prune_network",
    "prune_state",
    "register_criterion",
]
