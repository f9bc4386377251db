"""Karcher mean: the weighted Riemannian (Fréchet) mean of the models' directions on the unit
hypersphere, scaled back by their mean norm (https://arxiv.org/abs/2603.04972, mergekit 0.1.5).

Each tensor is one flat vector x_i = |x_i| u_i; models with |x_i| <= ``tol`` carry no
direction. Starting from the normalized weighted average of the directions, iterate at most
``max_iter`` times: with θ_i = arccos(m · u_i) (terms with θ_i < ``tol`` skipped),
g = sum_i a_i θ_i / sin θ_i (u_i - (m · u_i) m) and, unless |g| < ``tol``,
m <- normalize(m cos|g| + g sin|g| / |g|). The result is (sum_i a_i |x_i|) m.

Weights a_i are uniform, as in mergekit. Unlike mergekit's per-model loop, all dot products
of an iteration are one matrix-vector product, with one host sync for the stopping test.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype


def karcher(tensors: list[torch.Tensor], *, max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    if not tensors:
        raise RecipeError("karcher: merges at least 1 model, got 0")
    check_shapes("karcher", tensors)
    if len(tensors) == 1:
        return tensors[0]
    first = tensors[0]
    dtype = compute_dtype(first)
    n = len(tensors)
    vectors = torch.stack([t.to(dtype) for t in tensors]).view(n, -1)  # (M, N)
    norms = torch.linalg.vector_norm(vectors, dim=1)  # (M,)
    scale = norms.sum() / n  # the uniform weights 1/M over every model
    valid = (norms > tol).tolist()
    if not any(valid):
        return torch.zeros_like(first)
    keep = [i for i, ok in enumerate(valid) if ok]
    units = vectors[keep] / norms[keep, None]  # (V, N)
    a = torch.full((len(keep),), 1 / len(keep), dtype=dtype, device=first.device)  # (V,)
    mean = a @ units  # (N,)
    mean_norm = torch.linalg.vector_norm(mean)
    mean = units[0].clone() if mean_norm < tol else mean / mean_norm
    for _ in range(max_iter):
        dots = (units @ mean).clamp(-1, 1)  # (V,)
        theta = torch.arccos(dots)
        coef = torch.where(theta < tol, 0.0, a * theta / torch.sin(theta))  # (V,)
        tangent = coef @ units - coef.dot(dots) * mean  # sum_i c_i (u_i - dot_i m)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm > tol:
            mean = mean / unit_norm
    return (scale * mean).view(first.shape).to(first.dtype)
