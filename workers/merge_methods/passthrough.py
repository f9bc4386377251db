"""Passthrough: copy one model's tensor, optionally multiplied by ``scale``.

mergekit uses it to stack layers (``slices``); it takes exactly one input per tensor, and
``scale`` (per model, default none) multiplies it, e.g. to damp a duplicated layer's output
projections. https://arxiv.org/abs/2403.13257 (mergekit).
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import per_model


def passthrough(tensors: list[torch.Tensor], *, scale: list[float | None] = None) -> torch.Tensor:
    """The single input tensor itself (not a copy) when ``scale`` is unset, else a scaled copy."""
    if len(tensors) != 1:
        raise RecipeError(f"passthrough: takes exactly one model per tensor, got {len(tensors)}")
    (tensor,) = tensors
    (factor,) = per_model(scale, 1, "scale")
    if factor is None:
        return tensor
    return tensor * factor  # same dtype and shape as the input
