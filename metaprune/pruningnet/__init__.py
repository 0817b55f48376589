"""The PruningNet hypernetwork (MetaPruning, Liu et al., ICCV 2019, sec. 3.1-3.2), its sampler,
its training loop and its checkpoint file; its encodings (:mod:`.encoders`: layer, global,
graph) and full-net supervisions (:mod:`.supervision`: logits, stagewise) are registries."""

from metaprune.pruningnet.blocks import ChoiceBN, MetaConv
from metaprune.pruningnet.checkpoint import PRUNINGNET_FILE, load_pruningnet, save_pruningnet
from metaprune.pruningnet.net import PruningNet, PruningNetConfig, create_pruningnet
from metaprune.pruningnet.sampler import ConfigSampler
from metaprune.pruningnet.training import score_config, train_pruningnet

__all__ = [
    "PRUNINGNET_FILE",
    "ChoiceBN",
    "ConfigSampler",
    "MetaConv",
    "PruningNet",
    "PruningNetConfig",
    "create_pruningnet",
    "load_pruningnet",
    "save_pruningnet",
    "score_config",
    "train_pruningnet",
]
