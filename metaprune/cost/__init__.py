"""Cost models: exact FLOPs and parameters (:mod:`.flops`), measured latency (:mod:`.latency`)."""

from metaprune.cost.flops import CostModel, cost_model, count_flops, count_params

__all__ = ["CostModel", "cost_model", "count_flops", "count_params"]
