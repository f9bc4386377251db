"""Spherical linear interpolation between the base model and one other model (Shoemake, 1985).

Each tensor is treated as one flat vector. With θ the angle between the base tensor a and
the other tensor b (measured on their normalized copies),

    slerp(t) = sin((1 - t) θ) / sin θ · a + sin(t θ) / sin θ · b,

applied to the unnormalized tensors, so t = 0 gives the base model and t = 1 the other one.
Nearly collinear or antipodal pairs (|cos θ| > 0.9995) fall back to linear interpolation,
as in mergekit 0.1.5. A norm below 1e-8 counts as 1 when measuring the angle.

The angle's three dot products are taken over fixed chunks of the flat vectors in the compute
dtype (a bfloat16 chunk converted into a reused scratch) and summed across chunks in float64, and
the result is `base.weighted_sum` of the two tensors: no whole-tensor float32 copy, which for
bfloat16 inputs would be fresh memory twice their size, per tensor.
"""

from __future__ import annotations

import math

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, in_dtype, weighted_sum

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8
CHUNK = 1 << 16
"""Elements per partial sum of the angle's dot products on the CPU. Fixed, not `base.BLOCK`: the
angle, and so the merge, must not depend on the element-wise kernels' block size."""


def slerp(tensors: list[torch.Tensor], base: torch.Tensor, *, t: float,
          out: torch.Tensor | None = None) -> torch.Tensor:
    if len(tensors) != 1:
        raise RecipeError(f"slerp: merges the base model with exactly one other model, got {len(tensors)} others")
    check_shapes("slerp", tensors, base)
    a, b = base.reshape(-1), tensors[0].reshape(-1)  # (N,), (N,)
    coef_a, coef_b = slerp_coefficients(a, b, t)
    return weighted_sum([a, b], [coef_a, coef_b], like=base, out=out)


def slerp_coefficients(a: torch.Tensor, b: torch.Tensor, t: float) -> tuple[float, float]:
    """The weights of a and b (flat vectors) in their spherical interpolation at ``t``."""
    if a.numel() == 0:
        return 1 - t, t
    dot, square_a, square_b = _dot_products(a, b)
    norm_a = math.sqrt(square_a)
    norm_b = math.sqrt(square_b)
    norm_a = norm_a if norm_a > NORM_EPS else 1.0
    norm_b = norm_b if norm_b > NORM_EPS else 1.0
    cos = min(1.0, max(-1.0, dot / norm_a / norm_b))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    return math.sin((1 - t) * theta) / sin_theta, math.sin(t * theta) / sin_theta


def _dot_products(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """``<a, b>``, ``<a, a>``, ``<b, b>`` in the compute dtype, chunk by chunk, summed in float64."""
    dtype = compute_dtype(a)
    width = min(CHUNK, a.numel()) if a.device.type == "cpu" else a.numel()  # one chunk where ops are launched
    scratch_a = torch.empty(width, dtype=dtype, device=a.device)  # (C,)
    scratch_b = torch.empty(width, dtype=dtype, device=a.device)  # (C,)
    dot = square_a = square_b = 0.0
    for x, y in zip(a.split(width), b.split(width)):
        x, y = in_dtype(x, dtype, scratch_a), in_dtype(y, dtype, scratch_b)
        dot += float(torch.dot(x, y))
        square_a += float(torch.dot(x, x))
        square_b += float(torch.dot(y, y))
    return dot, square_a, square_b
