"""The channel-importance criteria, one a file; importing this package registers them all."""

from metaprune.prune.criteria import bn_scale, distortion, fisher, ga, l1, lrf, sss  # noqa: F401
