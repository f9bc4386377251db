"""Pareto dominance over several scores, all maximised (torch-free, numpy only).

One source for the strategy (`evolve.strategies.pareto`) and the leaderboard's ``--pareto``:
``a`` dominates ``b`` when ``a >= b`` on every objective and ``a > b`` on at least one. Equal
points do not dominate each other, so duplicates share a front; with one objective the front
is every point tied at the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matrix(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 1)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"pareto: points must be an (n, objectives) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("pareto: points must be finite")
    return arr


def dominates(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``d[i, j]``: point i dominates point j."""
    p = _matrix(points)
    ge = np.all(p[:, None, :] >= p[None, :, :], axis=2)
    gt = np.any(p[:, None, :] > p[None, :, :], axis=2)
    return ge & gt


def pareto_front(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Indices (ascending) of the points no other point dominates.

    One sweep in decreasing lexicographic order, where a dominating point always comes first,
    checking each point against the front so far only: O(n * front * m) time and O(front * m)
    memory, so a leaderboard of 10,000 candidates needs no n x n matrix.
    """
    p = _matrix(points)
    kept = np.empty_like(p)  # the front's points so far, in its first ``size`` rows
    front, size = [], 0
    for i in np.lexsort(-p.T[::-1]):
        x, f = p[i], kept[:size]
        if not ((f >= x).all(axis=1) & (f > x).any(axis=1)).any():
            kept[size], size = x, size + 1
            front.append(int(i))
    return np.sort(np.array(front, dtype=int))


def non_dominated_sort(points: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
    """NSGA-II's fronts: indices of the first front, then of the front once it is removed, ...

    O(n^2 m) memory and time, for the strategy's archive (tens of points).
    """
    d = dominates(points)
    beaten_by = d.sum(axis=0)  # how many points dominate each point
    fronts, current = [], np.flatnonzero(beaten_by == 0)
    while current.size:
        fronts.append(current)
        beaten_by = beaten_by - d[current].sum(axis=0)
        beaten_by[current] = -1  # placed
        current = np.flatnonzero(beaten_by == 0)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front: larger = more isolated; the extremes get inf.

    Per objective, the gap between a point's two neighbours in sorted order over the front's
    range (an objective with no range adds nothing), over the distinct points: a point equal to
    an earlier one gets 0, since it adds no spread (as pymoo does), so copies go first when an
    archive is trimmed. Sorting is stable: ties resolve by position, deterministically.
    """
    p = _matrix(points)
    first = np.sort(np.unique(p, axis=0, return_index=True)[1])  # each distinct point's first position
    out = np.zeros(p.shape[0])
    out[first] = _spread(p[first])
    return out


def _spread(p: np.ndarray) -> np.ndarray:
    n = p.shape[0]
    out = np.zeros(n)
    if n <= 2:
        out[:] = np.inf
        return out
    for k in range(p.shape[1]):
        order = np.argsort(p[:, k], kind="stable")
        values = p[order, k]
        span = values[-1] - values[0]
        if span > 0:
            out[order[0]] = out[order[-1]] = np.inf
            out[order[1:-1]] += (values[2:] - values[:-2]) / span
    return out
