"""Weighted average of the models' tensors (Wortsman et al., model soups, https://arxiv.org/abs/2203.05482).

merged = sum_i weight_i x_i, divided by sum_i weight_i when ``normalize`` (the default).
Computed in float32 (float64 stays float64) and returned in the inputs' dtype. mergekit
divides by a zero weight sum and returns inf/NaN; here that is an error.

``normalize`` divides the weights, not the sum, so the merge of two models is one
interpolation (`base.weighted_sum`): mergekit's divided sum and this agree to float32 rounding.
Either way a bfloat16 merge touches each input and output element once in memory.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, per_model, weighted_sum


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
    if normalize:
        weight = [w / total for w in weight]
    return weighted_sum(tensors, weight, like=tensors[0], out=out)
