"""metaprune: automatic channel pruning by meta-learning.

Implements MetaPruning (Liu et al., "MetaPruning: Meta Learning for Automatic Neural Network
Channel Pruning", ICCV 2019): a PruningNet generates the weights of any pruned network of a
channel space, an evolutionary search picks the best configuration under constraints, and the
winner is retrained from scratch.
"""

from metaprune.cost import count_flops, count_params
from metaprune.models import build_pruned, create_space, list_models
from metaprune.space import ChannelConfig, ChannelSpace

__all__ = [
    "ChannelConfig",
    "ChannelSpace",
    "build_pruned",
    "count_flops",
    "count_params",
    "create_space",
    "list_models",
]
__version__ = "0.1.0"
