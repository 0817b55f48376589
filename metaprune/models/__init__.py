"""Model families and their registry; importing this package registers every family."""

from metaprune.arch import Arch, Block, Conv, Layer
from metaprune.models import cbm, mobilenet_v1, mobilenet_v2, resnet  # noqa: F401  (registration)
from metaprune.models.pruned import PrunedNet
from metaprune.models.registry import (
    SpaceMismatchError,
    build_pruned,
    create_space,
    list_models,
    register,
    space_from_description,
)

__all__ = [
    "Arch",
    "Block",
    "Conv",
    "Layer",
    "PrunedNet",
    "SpaceMismatchError",
    "build_pruned",
    "create_space",
    "list_models",
    "register",
    "space_from_description",
]
