"""Spherical linear interpolation between the base model and one other model (Shoemake, 1985).

Each tensor is treated as one flat vector. With θ the angle between the base tensor a and
the other tensor b (measured on their normalized copies),

    slerp(t) = sin((1 - t) θ) / sin θ · a + sin(t θ) / sin θ · b,

applied to the unnormalized tensors, so t = 0 gives the base model and t = 1 the other one.
Nearly collinear or antipodal pairs (|cos θ| > 0.9995) fall back to linear interpolation,
as in mergekit 0.1.5. A norm below 1e-8 counts as 1 when measuring the angle.
"""

from __future__ import annotations

import math

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import blocks, check_shapes, compute_dtype

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


def slerp(tensors: list[torch.Tensor], base: torch.Tensor, *, t: float) -> torch.Tensor:
    if len(tensors) != 1:
        raise RecipeError(f"slerp: merges the base model with exactly one other model, got {len(tensors)} others")
    check_shapes("slerp", tensors, base)
    dtype = compute_dtype(base)
    a = base.reshape(-1).to(dtype)  # (N,)
    b = tensors[0].reshape(-1).to(dtype)  # (N,)
    coef_a, coef_b = slerp_coefficients(a, b, t)
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)  # (*S)
    out_flat = out.view(-1)  # (N,)
    for part in blocks(a.numel(), base.device):  # no whole float32 result: it would be written once, read once
        out_flat[part].copy_(torch.mul(a[part], coef_a).add_(b[part], alpha=coef_b))
    return out


def slerp_coefficients(a: torch.Tensor, b: torch.Tensor, t: float) -> tuple[float, float]:
    """The weights of a and b (flat vectors) in their spherical interpolation at ``t``."""
    if a.numel() == 0:
        return 1 - t, t
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    norm_a = norm_a if norm_a > NORM_EPS else 1.0
    norm_b = norm_b if norm_b > NORM_EPS else 1.0
    cos = min(1.0, max(-1.0, float(torch.dot(a, b)) / norm_a / norm_b))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta
