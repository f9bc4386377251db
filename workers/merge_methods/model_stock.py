"""Model Stock (Jang et al., https://arxiv.org/abs/2403.19522): how far to move from the base
toward the average of N >= 2 fine-tunes, from the angle between their task vectors.

With offsets d_i = x_i - b and cos θ the mean pairwise cosine between them (each clamped to
[-1, 1], norms clamped below at 1e-6),

    t = N cos θ / (1 + (N - 1) cos θ),    merged = b + t · mean_i d_i.

``filter_wise`` measures θ per row along the last axis (a 1-D tensor is one row) instead
of over the whole flattened tensor. Where the denominator vanishes (|.| < 1e-6) the base is
kept (t = 0), as in mergekit 0.1.5. All pairwise dot products come from one Gram matrix.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype


def model_stock(tensors: list[torch.Tensor], base: torch.Tensor, *, filter_wise: bool = False) -> torch.Tensor:
    n = len(tensors)
    if n < 2:
        raise RecipeError(f"model_stock: merges at least 2 models besides the base model, got {n}")
    check_shapes("model_stock", tensors, base)
    dtype = compute_dtype(base)
    b = base.to(dtype)
    cols = base.shape[-1] if (filter_wise and base.dim() > 0) else max(base.numel(), 1)
    rows_b = b.reshape(-1, cols)  # (R, C): one row when not filter-wise
    offsets = torch.stack([t.to(dtype).reshape(-1, cols) - rows_b for t in tensors], dim=1)  # (R, N, C)
    gram = offsets @ offsets.transpose(1, 2)  # (R, N, N)
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()  # (R, N)
    i, j = torch.triu_indices(n, n, offset=1)
    cos = gram[:, i, j] / (norms[:, i] * norms[:, j]).clamp_min(1e-6)  # (R, pairs)
    cos = cos.clamp(-1, 1).mean(dim=1, keepdim=True)  # (R, 1)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), n * cos / torch.where(singular, 1.0, denominator))
    merged = rows_b + t * offsets.mean(dim=1)  # (R, C)
    return merged.reshape(base.shape).to(base.dtype)
