"""Multi-SLERP: barycentric interpolation of N tensors on a hypersphere
(https://goddard.blog/posts/multislerp-wow-what-a-cool-idea).

Each tensor (or, with a base, its delta from the base) is one flat vector v_i. With weights
w_i (divided by their sum when ``normalize_weights``), unit vectors u_i = v_i / (|v_i| + eps):

1. mean direction m = normalize(sum_i w_i u_i);
2. tangent vectors u_i - (u_i · m) m, averaged with the weights into g;
3. back onto the sphere: r = m cos|g| + g sin|g| / |g| (|g| + eps as the norm), scaled by
   sum_i w_i |v_i|, plus the base.

One model is returned as it is. When the weighted mean direction vanishes (antipodal inputs
with balancing weights) two models fall back to linear interpolation; more is an error.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, per_model


def multislerp(tensors: list[torch.Tensor], base: torch.Tensor | None, *, weight: list[float],
               normalize_weights: bool = True, eps: float = 1e-8) -> torch.Tensor:
    if not tensors:
        raise RecipeError("multislerp: merges at least 1 model, got 0")
    check_shapes("multislerp", tensors, base)
    weight = per_model(weight, len(tensors), "weight")
    if len(tensors) == 1:
        return tensors[0]
    first = tensors[0]
    dtype = compute_dtype(first)
    vectors = torch.stack([t.to(dtype) for t in tensors]).view(len(tensors), -1)  # (M, N)
    if base is not None:
        vectors.sub_(base.to(dtype).reshape(1, -1))
    w = torch.tensor(weight, dtype=dtype, device=first.device)  # (M,)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)  # (M, 1)
    units = vectors / (norms + eps)  # (M, N)
    mean = w @ units  # (N,)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(tensors) != 2:
            raise RecipeError(
                "multislerp: the weighted directions of the models cancel out (antipodal models with "
                "balancing weights); change the weights")
        merged = w @ vectors  # linear fallback
    else:
        mean = mean / mean_norm
        tangents = units - (units @ mean)[:, None] * mean  # (M, N)
        g = w @ tangents  # (N,)
        g_norm = torch.linalg.vector_norm(g) + eps
        merged = (mean * torch.cos(g_norm) + g * (torch.sin(g_norm) / g_norm)) * (norms.squeeze(1) @ w)
    merged = merged.view(first.shape)
    if base is not None:
        merged = merged + base.to(dtype)
    return merged.to(first.dtype)
