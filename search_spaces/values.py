"""Parameter values as users write them, and how one resolves for a given tensor.

A value is plain JSON data in one of four forms:

- a scalar: ``0.5`` or ``true``;
- a gradient: ``[0.2, 0.8]``, linearly interpolated across the layers (mergekit's meaning);
- per-tensor-kind filters: ``[{filter: self_attn, value: 0.3}, {value: 0.7}]``; the first
  entry whose filter is a substring of the tensor name wins, an entry without a filter is
  the default;
- per-layer-group arrays: ``{groups: [0.1, 0.4, 0.9]}``; the layers are split into
  ``len(groups)`` contiguous groups of (nearly) equal size. This is the form a search produces.

Filter entries may hold any of the other forms; the filter ``*`` matches every tensor.
Tensors outside the layer stack (embeddings, the final norm, the LM head) take a gradient's
value at position 0, as in mergekit. For groups, tensors before the stack (embeddings) take
the first group and tensors after it (final norm, LM head) the last one, which is what
mergekit does when each group is written as one of its slices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from search_spaces.errors import RecipeError

Scalar = float | int | bool


def check_value(value: Any, where: str) -> None:
    """Raise `RecipeError` naming ``where`` if ``value`` is not a valid parameter value."""
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}: must be a finite number, got {value}")
        return
    if isinstance(value, Mapping):
        if set(value) != {"groups"}:
            raise RecipeError(f"{where}: a mapping value must be {{groups: [...]}}, got keys {sorted(value)}")
        groups = value["groups"]
        if not isinstance(groups, list | tuple) or not groups:
            raise RecipeError(f"{where}.groups: must be a non-empty list of numbers")
        for i, g in enumerate(groups):
            check_value(g, f"{where}.groups[{i}]")
            if isinstance(g, list | tuple | dict):
                raise RecipeError(f"{where}.groups[{i}]: must be a number")
        return
    if isinstance(value, list | tuple):
        if not value:
            raise RecipeError(f"{where}: an empty list is not a value")
        if all(isinstance(v, Mapping) and "value" in v for v in value):
            for i, entry in enumerate(value):
                extra = set(entry) - {"filter", "value"}
                if extra:
                    raise RecipeError(f"{where}[{i}]: unknown keys {sorted(extra)} (expected filter, value)")
                if "filter" in entry and not isinstance(entry["filter"], str):
                    raise RecipeError(f"{where}[{i}].filter: must be a string")
                check_value(entry["value"], f"{where}[{i}].value")
            return
        for i, v in enumerate(value):
            if not isinstance(v, bool | int | float):
                raise RecipeError(
                    f"{where}[{i}]: a list value is either numbers (a gradient) "
                    "or {filter, value} entries"
                )
            check_value(v, f"{where}[{i}]")
        return
    raise RecipeError(f"{where}: unsupported value {value!r}")


def resolve(value: Any, tensor_name: str, position: float, layer: int | None, num_layers: int) -> Scalar | None:
    """The scalar that ``value`` takes for one tensor.

    ``position`` is the tensor's place in its slice of the stack in [0, 1]
    (layer / (num_layers - 1); 0 outside the stack). ``layer`` is the layer index in the
    output stack: None before it, ``num_layers`` after it.
    Returns None when a filter list has no matching entry and no default.
    """
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        groups = value["groups"]
        return groups[_group_index(len(groups), layer, num_layers)]
    if value and isinstance(value[0], Mapping):
        for entry in value:
            flt = entry.get("filter")
            if flt is None or flt == "*" or flt in tensor_name:
                return resolve(entry["value"], tensor_name, position, layer, num_layers)
        return None
    return _interpolate(value, position)


def _group_index(n_groups: int, layer: int | None, num_layers: int) -> int:
    if layer is None:
        return 0
    return min(n_groups - 1, layer * n_groups // max(num_layers, 1))


def _interpolate(points: list | tuple, position: float) -> Scalar:
    """mergekit's gradient: linear between neighbouring points; a list holding booleans is
    not interpolated but picks ``points[int(position * (len - 1))]``."""
    if len(points) == 1:
        return points[0]
    scaled = position * (len(points) - 1)
    if any(isinstance(p, bool) for p in points):
        return points[int(scaled)]
    lo = min(int(math.floor(scaled)), len(points) - 2)
    frac = scaled - lo
    return points[lo] * (1 - frac) + points[lo + 1] * frac
