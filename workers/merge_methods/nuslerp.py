"""NuSLERP: spherical interpolation of two models, per row or flattened, optionally of
their task vectors (mergekit, https://github.com/arcee-ai/mergekit).

With weights w0, w1 the interpolation point is t = w1 / (w0 + w1) (0.5 when the sum is below
1e-6). Without a base it slerps the two tensors; with one, their deltas from it, and adds
the base back. ``nuslerp_flatten`` (default) treats the tensor as one vector; otherwise each
vector along the last axis, or with ``nuslerp_row_wise`` along the first axis, is slerped
on its own. Exactly collinear vectors (1 - cos² <= 1e-16) are interpolated linearly.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, per_model


def nuslerp(tensors: list[torch.Tensor], base: torch.Tensor | None, *, weight: list[float],
            nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True) -> torch.Tensor:
    if len(tensors) != 2:
        raise RecipeError(f"nuslerp: merges exactly 2 models besides the base model, got {len(tensors)}")
    check_shapes("nuslerp", tensors, base)
    w0, w1 = per_model(weight, 2, "weight")
    total = w0 + w1
    t = 0.5 if abs(total) < 1e-6 else w1 / total
    ref = tensors[0] if base is None else base
    dtype = compute_dtype(ref)
    v0, v1 = (x.to(dtype) for x in tensors)
    if base is not None:
        b = base.to(dtype)
        v0, v1 = v0 - b, v1 - b
    merged = slerp_vectors(t, v0, v1, flatten=nuslerp_flatten, dim=0 if nuslerp_row_wise else -1)
    if base is not None:
        merged = merged.add_(b)
    return merged.to(ref.dtype)


def slerp_vectors(t: float, v0: torch.Tensor, v1: torch.Tensor, *, flatten: bool, dim: int,
                  eps: float = 1e-8) -> torch.Tensor:
    """Slerp of v0 and v1 along ``dim`` (or of the flattened tensors); same shape as v0."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    n0 = torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp_min(1e-7)  # (..., 1)
    n1 = torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp_min(1e-7)
    cos = ((v0 / n0) * (v1 / n1)).sum(dim=-1, keepdim=True).clamp(-1, 1)  # (..., 1)
    collinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(collinear, 0, cos))
    sin_theta = torch.sin(theta)
    c0 = torch.where(collinear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    c1 = torch.where(collinear, t, torch.sin(t * theta) / sin_theta)
    out = c0 * v0 + c1 * v1
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)
