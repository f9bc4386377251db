"""Weighted average of the models' tensors (Wortsman et al., model soups, https://arxiv.org/abs/2203.05482).

merged = sum_i weight_i x_i, divided by sum_i weight_i when ``normalize`` (the default).
Computed in float32 (float64 stays float64) and returned in the inputs' dtype. mergekit
divides by a zero weight sum and returns inf/NaN; here that is an error.

The sum runs block by block (`base.weighted_sum`), so a bfloat16 merge touches each input and
output element once in memory.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, per_model, weighted_sum


def linear(tensors: list[torch.Tensor], *, weight: list[float], normalize: bool = True,
           out: torch.Tensor | None = None) -> torch.Tensor:
    if not tensors:
        raise RecipeError("linear: needs at least one model")
    check_shapes("linear", tensors)
    weight = per_model(weight, len(tensors), "weight")
    total = sum(weight)
    if normalize and total == 0:
        raise RecipeError("linear: the weights sum to 0, so they cannot be normalized; "
                          "change the weights or set normalize: false")
    first = tensors[0]
    dtype = compute_dtype(first)
    # dividing by a sum that is 1 in the compute dtype changes no bit: skip that pass
    divide = normalize and torch.tensor(total, dtype=dtype).item() != 1.0
    return weighted_sum(tensors, weight, like=first, out=out, divide_by=total if divide else None)
