"""Weighted average of the models' tensors (Wortsman et al., model soups, https://arxiv.org/abs/2203.05482).

merged = sum_i weight_i x_i, divided by sum_i weight_i when ``normalize`` (the default).
Computed in float32 (float64 stays float64) and returned in the inputs' dtype. mergekit
divides by a zero weight sum and returns inf/NaN; here that is an error.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, per_model


def linear(tensors: list[torch.Tensor], *, weight: list[float], normalize: bool = True) -> torch.Tensor:
    if not tensors:
        raise RecipeError("linear: needs at least one model")
    check_shapes("linear", tensors)
    weight = per_model(weight, len(tensors), "weight")
    first = tensors[0]
    dtype = compute_dtype(first)
    merged = torch.zeros(first.shape, dtype=dtype, device=first.device)  # (*S)
    for tensor, w in zip(tensors, weight):
        merged.add_(tensor, alpha=w)  # promotes the input to the compute dtype without a copy
    if normalize:
        total = sum(weight)
        if total == 0:
            raise RecipeError("linear: the weights sum to 0, so they cannot be normalized; "
                              "change the weights or set normalize: false")
        merged.div_(total)
    return merged.to(first.dtype)
