"""NearSwap (https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001): take the other
model's value where it is close to the base's, interpolate toward the base where it is not.

Per entry, w = clamp(t / max(|b - x|, 1e-6), 0, 1) and merged = b + w (x - b): entries within
``t`` of the base take the other model's value, farther ones move by exactly ``t``.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype


def nearswap(tensors: list[torch.Tensor], base: torch.Tensor, *, t: float) -> torch.Tensor:
    if len(tensors) != 1:
        raise RecipeError(f"nearswap: merges exactly 1 model besides the base model, got {len(tensors)}")
    check_shapes("nearswap", tensors, base)
    dtype = compute_dtype(base)
    b = base.to(dtype)
    delta = tensors[0].to(dtype) - b  # (*S)
    weight = delta.abs().clamp_min_(1e-6).reciprocal_().mul_(t).clamp_(0, 1)  # (*S)
    return delta.mul_(weight).add_(b).to(base.dtype)
