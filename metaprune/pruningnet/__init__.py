"""The PruningNet hypernetwork (MetaPruning, Liu et al., ICCV 2019, sec. 3.1-3.2) and its sampler."""

from metaprune.pruningnet.blocks import ChoiceBN, MetaConv
from metaprune.pruningnet.net import PruningNet, PruningNetConfig, create_pruningnet
from metaprune.pruningnet.sampler import ConfigSampler

__all__ = [
    "ChoiceBN",
    "ConfigSampler",
    "MetaConv",
    "PruningNet",
    "PruningNetConfig",
    "create_pruningnet",
]
