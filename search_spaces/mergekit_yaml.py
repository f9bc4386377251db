"""Our recipe as a mergekit config, so anyone can reproduce a searched merge with mergekit.

mergekit has no per-layer-group value, so a recipe with ``{groups: [...]}`` values becomes
one mergekit slice per run of layers whose resolved values agree, each slice's sources
carrying scalars. Gradients keep mergekit's own meaning and are passed through as they are
when the recipe has no groups; a recipe mixing the two cannot be written exactly and is refused.
"""

from __future__ import annotations

from typing import Any

from search_spaces.errors import RecipeError
from search_spaces.recipe import Recipe, thaw
from search_spaces.values import resolve


def to_mergekit(recipe: Recipe, num_layers: int) -> dict[str, Any]:
    data = recipe.to_dict()
    data.pop("seed", None)
    if recipe.slices or not _has(recipe, "groups"):
        return data
    if _has(recipe, "gradient"):
        raise RecipeError("recipe mixes per-layer-group values and gradients; mergekit cannot express it exactly")
    base = recipe.base_model
    models = [m for m in recipe.models if m.model != base]
    slices: list[dict[str, Any]] = []
    for layer in range(num_layers):
        global_params = _at_layer(thaw(recipe.parameters), layer, num_layers)
        sources = [{"model": m.model, "parameters": _at_layer(thaw(m.parameters), layer, num_layers)} for m in models]
        if base is not None:
            sources.append({"model": base})
        key = (sources, global_params)
        if slices and slices[-1]["_key"] == key:
            slices[-1]["_end"] = layer + 1
            continue
        slices.append({"_key": key, "_start": layer, "_end": layer + 1})
    out_slices = []
    for s in slices:
        sources, global_params = s["_key"]
        srcs = [{**src, "layer_range": [s["_start"], s["_end"]]} for src in sources]
        out_slice: dict[str, Any] = {"sources": srcs}
        if global_params:
            out_slice["parameters"] = global_params
        out_slices.append(out_slice)
    data.pop("models", None)
    data.pop("parameters", None)
    data["slices"] = out_slices
    return data


def _at_layer(params: dict[str, Any], layer: int, num_layers: int) -> dict[str, Any]:
    """Resolve group values for one layer; filters stay filters (mergekit has them)."""
    out = {}
    for name, value in params.items():
        out[name] = _value_at(value, layer, num_layers)
    return out


def _value_at(value: Any, layer: int, num_layers: int) -> Any:
    if isinstance(value, dict):
        return resolve(value, "", 0.0, layer, num_layers)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [{**entry, "value": _value_at(entry["value"], layer, num_layers)} for entry in value]
    return value


def _has(recipe: Recipe, form: str) -> bool:
    values = list(recipe.parameters.values()) + [v for m in recipe.models for v in m.parameters.values()]
    return any(_contains(thaw(v), form) for v in values)


def _contains(value: Any, form: str) -> bool:
    if isinstance(value, dict):
        return form == "groups"
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return any(_contains(e["value"], form) for e in value)
        return form == "gradient"
    return False
