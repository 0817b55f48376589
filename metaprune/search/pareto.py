"""Non-dominated filtering of scored configurations (maximise accuracy, minimise costs)."""

from __future__ import annotations

import numpy as np


def pareto_mask(accuracy: np.ndarray, costs: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Mask of the points no other point dominates.

    ``accuracy`` is (N,), maximised; ``costs`` is (N, M), minimised.  A point dominates another
    when it is at least as good in every objective and strictly better in one; equal points do
    not dominate each other, so both stay.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    cst = np.asarray(costs, dtype=np.float64).reshape(len(acc), -1)
    keep = np.ones(len(acc), dtype=bool)
    for s in range(0, len(acc), chunk):
        a, c = acc[s : s + chunk, None], cst[s : s + chunk, None, :]  # (B, 1), (B, 1, M)
        no_worse = (acc[None, :] >= a) & (cst[None, :, :] <= c).all(-1)  # (B, N)
        better = (acc[None, :] > a) | (cst[None, :, :] < c).any(-1)
        keep[s : s + chunk] = ~(no_worse & better).any(1)
    return keep
