"""Arcee Fusion (https://arcee.ai, mergekit 0.1.5): take the other model's change only where it
is unusually important, leaving the base everywhere else.

Importance of each entry: |x - b| times the KL divergence, along the last axis, between
softmax(x) and softmax(b) (each + 1e-8). The threshold is median + 1.5 · (q3 - q1) of the
importances (quantile q taken as the sorted entry at floor(q (n - 1))), and
merged = b + (x - b) · [importance >= threshold].

mergekit estimates the quantiles from 10^6 random draws for larger tensors; here they are
always exact (kthvalue, no sort), so the result is deterministic and equal to mergekit's
whenever the tensor has at most 10^6 entries.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype

_EPS = 1e-8


def arcee_fusion(tensors: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    if len(tensors) != 1:
        raise RecipeError(f"arcee_fusion: merges exactly 1 model besides the base model, got {len(tensors)}")
    check_shapes("arcee_fusion", tensors, base)
    dtype = compute_dtype(base)
    b = base.to(dtype)
    x = tensors[0].to(dtype)
    delta = x - b  # (*S)
    if delta.numel() == 0:
        return base.clone()
    p = torch.softmax(x, dim=-1).add_(_EPS)
    q = torch.softmax(b, dim=-1).add_(_EPS)
    kl = (p * (p / q).log_()).sum(dim=-1, keepdim=True)  # (..., 1)
    importance = delta.abs().mul_(kl).reshape(-1)  # (N,)
    n = importance.numel()
    q1, median, q3 = (torch.kthvalue(importance, int(q * (n - 1)) + 1).values for q in (0.25, 0.5, 0.75))
    threshold = median + 1.5 * (q3 - q1)
    keep = (importance >= threshold).view(delta.shape)
    return delta.mul_(keep).add_(b).to(base.dtype)
