"""Sparsifying a task vector: which entries of a delta to keep, and how to rescale them.

The four ways to choose the kept entries carry mergekit 0.1.5's names:

- ``magnitude`` (TIES): keep the ``density`` fraction of entries with the largest |delta|,
  at least one entry when density > 0.
- ``random`` (DARE): keep each entry independently with probability ``density``.
- ``magnitude_outliers`` (Model Breadcrumbs): drop the ``gamma`` fraction of largest |delta|
  as outliers, then the smallest, so that the ``density`` fraction is kept.
- ``della_magprune`` (DELLA): within each row (the first axis; a 1-D tensor is one row),
  keep an entry with a probability that rises linearly with its magnitude rank, from
  ``density - epsilon`` for the smallest to ``density + epsilon`` for the largest.

A density of 1 or more keeps everything; a density of 0 or less drops everything.

Rescaling (``rescale: true``) multiplies the kept entries so that the delta keeps its L1
norm, as mergekit 0.1.5 does (``RescaleNorm.l1``). For DARE that is, in expectation, the
paper's 1/density; for DELLA it is one factor per tensor, not the paper's 1/p per entry.
Nothing is rescaled when either norm is below 1e-7.
"""

from __future__ import annotations

import numpy as np
import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import blocks

METHODS = ("magnitude", "random", "magnitude_outliers", "della_magprune")
_RESCALE_EPS = 1e-7


def keep_mask(
    delta: torch.Tensor,
    method: str,
    density: float,
    *,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """A bool mask shaped like ``delta`` of the entries to keep, or None to keep them all."""
    if density >= 1:
        return None
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta, dtype=torch.bool)
    if method == "magnitude":
        return magnitude_mask(delta, density)
    if method == "random":
        return random_mask(delta, density, generator)
    if method == "magnitude_outliers":
        return outlier_mask(delta, density, gamma)
    if method == "della_magprune":
        return della_mask(delta, density, epsilon, generator)
    raise ValueError(f"unknown sparsification method '{method}' (known: {', '.join(METHODS)})")


def sparsify(
    delta: torch.Tensor,
    method: str,
    density: float,
    *,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    rescale: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``delta`` with the dropped entries zeroed (and rescaled); ``delta`` is left unchanged."""
    mask = keep_mask(delta, method, density, gamma=gamma, epsilon=epsilon, generator=generator)
    return apply_mask_(delta.clone(), mask, rescale)


def apply_mask_(delta: torch.Tensor, mask: torch.Tensor | None, rescale: bool) -> torch.Tensor:
    """Zero ``delta`` where ``mask`` is False, in place; with ``rescale``, keep its L1 norm."""
    if mask is None:
        return delta
    if rescale:
        before = torch.linalg.vector_norm(delta, ord=1)
    _multiply_by_mask_(delta.view(-1), mask.view(-1))
    if rescale:
        after = torch.linalg.vector_norm(delta, ord=1)
        # One factor per tensor; torch.where keeps it on the device (no host sync).
        usable = (before >= _RESCALE_EPS) & (after >= _RESCALE_EPS)
        delta.mul_(torch.where(usable, before / after, torch.ones_like(before)))
    return delta


def _multiply_by_mask_(delta: torch.Tensor, mask: torch.Tensor) -> None:
    """delta *= mask (1-D), block by block: on the CPU a bool tensor converts to float
    several times slower than the same bytes viewed as uint8, so they are converted as uint8."""
    for part in blocks(delta.numel(), delta.device):
        delta[part].mul_(mask[part].view(torch.uint8).to(delta.dtype))


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the max(1, int(density * n)) entries of largest magnitude."""
    n = delta.numel()
    k = max(1, int(density * n))
    return largest_k(delta.abs().reshape(-1), k).view(delta.shape)


def outlier_mask(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Model Breadcrumbs: keep int(density * n) entries after dropping the int(gamma * n) largest.

    When density + gamma > 1, fewer outliers are dropped so that the density is still met.
    """
    if not 0 <= gamma <= 1:
        raise RecipeError(f"breadcrumbs: gamma must be in [0, 1], got {gamma}")
    n = delta.numel()
    keep = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - keep - n_top)
    # In ascending order of magnitude, entries n_bottom .. n_bottom + keep - 1 survive: they are
    # among the (n - n_bottom) largest but not among the (n - n_bottom - keep) largest.
    magnitudes = delta.abs().reshape(-1)
    kept = largest_k(magnitudes, n - n_bottom) & ~largest_k(magnitudes, n - n_bottom - keep)
    return kept.view(delta.shape)


def random_mask(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """DARE: keep each entry with probability ``density``."""
    return torch.rand(delta.shape, generator=generator, device=delta.device) < density


def della_mask(
    delta: torch.Tensor, density: float, epsilon: float, generator: torch.Generator | None
) -> torch.Tensor:
    """DELLA's MagPrune: per row, keep probability density ± epsilon by magnitude rank."""
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise RecipeError(
            f"della: density ± epsilon must lie strictly between 0 and 1 "
            f"(density={density}, epsilon={epsilon}); lower epsilon or move density"
        )
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)  # (R, C)
    n_rows, n_cols = rows.shape
    order = rows.abs().argsort(dim=1)  # (R, C) ascending magnitude
    positions = torch.arange(n_cols, dtype=torch.float32, device=delta.device).expand(n_rows, n_cols)
    rank = torch.empty((n_rows, n_cols), dtype=torch.float32, device=delta.device)
    rank.scatter_(1, order, positions)  # (R, C) 0 for the smallest .. C-1 for the largest
    # A one-entry row has no spread of ranks: it gets the middle probability, density.
    rank_norm = rank / (n_cols - 1) if n_cols > 1 else torch.full_like(rank, 0.5)
    probability = (density - epsilon) + rank_norm * 2 * epsilon  # (R, C) in [d - eps, d + eps]
    draw = torch.rand((n_rows, n_cols), generator=generator, device=delta.device)
    return (draw < probability).view(delta.shape)


def largest_k(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of exactly ``k`` entries of the 1-D ``magnitudes`` with the largest values.

    Ties at the threshold are broken by position (earliest first), so a smaller k always
    selects a subset of a larger k.
    """
    n = magnitudes.numel()
    if magnitudes.dtype not in (torch.float32, torch.float64):
        magnitudes = magnitudes.float()  # kthvalue lacks half precision on some devices
    if k >= n:
        return torch.ones_like(magnitudes, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitudes, dtype=torch.bool)
    threshold = kth_largest(magnitudes, k)
    mask = magnitudes > threshold
    missing = k - int(mask.count_nonzero())
    if missing > 0:
        mask[first_true(magnitudes == threshold, missing)] = True
    return mask


def first_true(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of the first ``count`` True entries of the 1-D bool ``mask``, in order.

    On the CPU numpy's flatnonzero is about 3x faster than torch.nonzero.
    """
    if mask.device.type != "cpu":
        return torch.nonzero(mask).squeeze(1)[:count]
    return torch.from_numpy(np.flatnonzero(mask.numpy())[:count])


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of the 1-D float ``values`` (1 <= k <= n), as a 0-d tensor on their device.

    On the CPU this is numpy's introselect, several times faster than torch.kthvalue
    (which copies and selects with an element-wise comparator) and the same value: NaN
    counts as the largest in both. Other devices use torch.kthvalue.
    """
    n = values.numel()
    if values.device.type != "cpu":
        return torch.kthvalue(values, n - k + 1).values
    array = values.detach().numpy()
    return torch.tensor(np.partition(array, n - k)[n - k], dtype=values.dtype)
