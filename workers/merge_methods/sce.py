"""SCE: select, calculate, erase (FuseChat, https://arxiv.org/abs/2408.07990).

With task vectors d_i = x_i - b:

1. select: with ``select_topk`` < 1, keep only the int(select_topk · nonzero) entries where
   the variance of d_i across models is largest (zero-variance entries never count);
2. calculate: weight each model by its mean squared (selected) delta, w_i = mean(d_i²) / sum_j
   mean(d_j²) (uniform when that sum is below 1e-6);
3. erase: at each entry keep only the deltas sharing the sign of sum_i d_i (TIES' election,
   zero counts as +) and merged = b + sum_i w_i d_i / max(sum_i kept w_i, 1e-6).

No per-model weights: SCE derives them. ``int8_mask`` is accepted for mergekit
compatibility and ignored (it only changes how mergekit stores masks).
"""

from __future__ import annotations

import torch

from workers.merge_methods.base import check_shapes, compute_dtype
from workers.merge_methods.sparsify import largest_k


def sce(tensors: list[torch.Tensor], base: torch.Tensor, *, int8_mask: bool = False,
        select_topk: float = 1.0) -> torch.Tensor:
    check_shapes("sce", tensors, base)
    if not tensors:
        return base.clone()
    n = len(tensors)
    dtype = compute_dtype(base)
    b = base.to(dtype)
    deltas = torch.stack([t.to(dtype) - b for t in tensors]).view(n, -1)  # (M, N)
    if select_topk < 1:
        if select_topk <= 0:
            deltas.zero_()
        else:
            variance = deltas.var(dim=0, unbiased=False)  # (N,)
            k = int(int(variance.count_nonzero()) * select_topk)
            deltas.mul_(largest_k(variance, k))  # (M, N) * (N,)
    energy = deltas.square().mean(dim=1)  # (M,)
    total = float(energy.sum())
    w = energy / total if abs(total) >= 1e-6 else torch.full_like(energy, 1 / n)  # (M,)
    elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(dtype)  # (N,)
    kept = (deltas.sign() == elected).to(dtype)  # (M, N); zeros never match
    kept_w = kept.mul_(w[:, None])  # (M, N) w_i where kept
    merged = (deltas * kept_w).sum(dim=0) / kept_w.sum(dim=0).clamp_min(1e-6)  # (N,)
    return merged.view(base.shape).add_(b).to(base.dtype)
