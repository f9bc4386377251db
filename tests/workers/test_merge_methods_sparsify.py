"""`largest_k`'s selection against the torch.kthvalue one it replaced: same mask, bit for bit,
ties at the threshold included (the earliest positions are kept)."""

from __future__ import annotations

import pytest
import torch

from workers.merge_methods.sparsify import kth_largest, largest_k


def _reference(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """The previous implementation: kthvalue threshold, then the earliest ties up to k."""
    n = magnitudes.numel()
    magnitudes = magnitudes if magnitudes.dtype in (torch.float32, torch.float64) else magnitudes.float()
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    threshold = torch.kthvalue(magnitudes, n - k + 1).values
    mask = magnitudes > threshold
    missing = k - int(mask.count_nonzero())
    if missing > 0:
        mask[torch.nonzero(magnitudes == threshold).squeeze(1)[:missing]] = True
    return mask


def _magnitudes(n: int, distinct: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """|values| drawn from ``distinct`` levels (few levels: many ties), in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randn(distinct, generator=g).abs()
    return levels[torch.randint(distinct, (n,), generator=g)].to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.float16])
@pytest.mark.parametrize("n,distinct", [(1, 1), (2, 1), (7, 3), (1001, 5), (4099, 4099), (65537, 40)])
def test_largest_k_equals_the_kthvalue_selection(n, distinct, dtype):
    x = _magnitudes(n, distinct, dtype, seed=n)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n, n + 5}):
        assert torch.equal(largest_k(x, k), _reference(x, k)), (n, distinct, dtype, k)


def test_largest_k_keeps_exactly_k_with_the_earliest_ties():
    x = torch.tensor([0.5, 2.0, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0])
    assert largest_k(x, 5).tolist() == [False, True, True, True, True, False, True, False]


def test_largest_k_handles_zeros_and_infinities():
    x = torch.tensor([0.0, float("inf"), 0.0, 1e-45, 3.0, float("inf"), 0.0])
    for k in range(x.numel() + 1):
        assert torch.equal(largest_k(x, k), _reference(x, k)), k


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_kth_largest_counts_nan_as_largest_like_kthvalue(k):
    x = torch.tensor([1.0, float("nan"), 2.0, 0.5])
    ours, theirs = kth_largest(x, k), torch.kthvalue(x, x.numel() - k + 1).values
    assert torch.equal(ours, theirs) or (ours.isnan() and theirs.isnan())
    assert torch.equal(largest_k(x, k), _reference(x, k))
