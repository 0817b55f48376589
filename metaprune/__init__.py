"""metaprune: automatic channel pruning by meta-learning.

Implements MetaPruning (Liu et al., "MetaPruning: Meta Learning for Automatic Neural Network
Channel Pruning", ICCV 2019): a PruningNet generates the weights of any pruned network of a
channel space (sec. 3.1-3.2), an evolutionary search picks the best configuration under
constraints (sec. 3.3), and the winner is retrained from scratch.
"""

from metaprune.benchmarks import BenchmarkScorer
from metaprune.cost import count_flops, count_params
from metaprune.cost.latency import load_latency_model
from metaprune.data import DataConfig, build_datasets, make_loader, recalibration_batches
from metaprune.engine import evaluate, fuse_bn, recalibrate_bn
from metaprune.export import export_model, load_pruned
from metaprune.models import build_pruned, create_space, list_models
from metaprune.pruningnet import (
    ConfigSampler,
    PruningNet,
    create_pruningnet,
    load_pruningnet,
    save_pruningnet,
    train_pruningnet,
)
from metaprune.schema import load_config
from metaprune.search import ProxyScorer, load_search, run_search, uniform_baseline
from metaprune.space import ChannelConfig, ChannelSpace

__all__ = [
    "BenchmarkScorer",
    "ChannelConfig",
    "ChannelSpace",
    "ConfigSampler",
    "DataConfig",
    "ProxyScorer",
    "PruningNet",
    "build_datasets",
    "build_pruned",
    "count_flops",
    "count_params",
    "create_pruningnet",
    "create_space",
    "evaluate",
    "export_model",
    "fuse_bn",
    "list_models",
    "load_config",
    "load_latency_model",
    "load_pruned",
    "load_pruningnet",
    "load_search",
    "make_loader",
    "recalibrate_bn",
    "recalibration_batches",
    "run_search",
    "save_pruningnet",
    "train_pruningnet",
    "uniform_baseline",
]
__version__ = "0.1.0"
