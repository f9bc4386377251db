"""From a recipe to a list of tensor merges: every check happens here, before any work.

A `MergePlan` says, for each output tensor, which input tensors feed it, which base tensor
(if any), and the resolved scalar/per-model parameter values. Both the streaming merge to
disk and the in-memory merge into a live model execute the same plan, so they agree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from search_spaces.errors import RecipeError
from search_spaces.methods import check_recipe
from search_spaces.recipe import ModelEntry, Recipe
from search_spaces.values import resolve
from workers.checkpoint import Checkpoint, CheckpointError, layer_of, with_layer
from workers.merge_methods import MergeMethod, get_method

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TensorRef:
    model: str  # model path, as written in the recipe
    name: str


@dataclass(frozen=True)
class TensorMerge:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    inputs: tuple[TensorRef, ...]
    base: TensorRef | None
    params: dict[str, Any]
    seed: int


@dataclass
class MergePlan:
    recipe: Recipe
    method: MergeMethod
    merges: list[TensorMerge]
    config: dict  # the output model's config.json
    reference: Checkpoint  # where config, tokenizer and generation config come from
    parents: list[str] = field(default_factory=list)


def open_checkpoints(recipe: Recipe) -> dict[str, Checkpoint]:
    return {path: Checkpoint.open(path) for path in recipe.model_paths}


def plan_merge(recipe: Recipe, checkpoints: dict[str, Checkpoint] | None = None) -> MergePlan:
    """Validate ``recipe`` against its models and lay out every tensor merge."""
    method = get_method(recipe.merge_method)
    checkpoints = checkpoints if checkpoints is not None else open_checkpoints(recipe)
    _check_parameters(recipe, method)
    check_recipe(recipe)  # value ranges and model counts, before any tensor is read
    if method.base == "required" and recipe.base_model is None:
        raise RecipeError(f"base_model: {method.name} needs a base model")

    reference = checkpoints[recipe.base_model or recipe.model_paths[0]]
    _check_compatible(reference, checkpoints)
    dtype = TORCH_DTYPES[recipe.dtype] if recipe.dtype else None
    if recipe.models:
        merges, num_layers = _plan_models(recipe, method, checkpoints, reference, dtype)
    else:
        merges, num_layers = _plan_slices(recipe, method, checkpoints, reference, dtype)
    config = dict(reference.config)
    config["num_hidden_layers"] = num_layers
    if dtype is not None:
        config["torch_dtype"] = recipe.dtype
        config["dtype"] = recipe.dtype
    if recipe.tokenizer_source is not None:
        if recipe.tokenizer_source == "base":
            tok_source = reference
        elif recipe.tokenizer_source in checkpoints:
            tok_source = checkpoints[recipe.tokenizer_source]
        else:
            tok_source = Checkpoint.open(recipe.tokenizer_source)
    else:
        tok_source = reference
    return MergePlan(recipe, method, merges, config, tok_source, parents=list(recipe.model_paths))


def _check_parameters(recipe: Recipe, method: MergeMethod) -> None:
    for name in recipe.parameters:
        method.check_parameter(name, "global", "parameters")
    entries = list(recipe.models) + [s for sl in recipe.slices for s in sl.sources]
    for entry in entries:
        for name in entry.parameters:
            method.check_parameter(name, "per_model", f"models[{entry.model}].parameters")
    for spec in method.params:
        if not spec.required:
            continue
        if spec.scope == "global" and spec.name not in recipe.parameters:
            raise RecipeError(f"parameters.{spec.name}: required by {method.name}")
        if spec.scope == "per_model":
            for entry in _merged_entries(recipe, method, entries):
                if spec.name not in entry.parameters and spec.name not in recipe.parameters:
                    raise RecipeError(f"models[{entry.model}].parameters.{spec.name}: required by {method.name}")


def _merged_entries(recipe: Recipe, method: MergeMethod, entries: list[ModelEntry]) -> list[ModelEntry]:
    """The entries whose tensors are merged.

    As in mergekit: a method that uses a base model gets it apart (its own parameters are
    ignored); one that does not (linear) merges the base like any other input, adding it
    with only the top-level parameters when it is not listed.
    """
    if method.base != "unused":
        return [e for e in entries if e.model != recipe.base_model]
    if recipe.base_model is not None and recipe.models and all(e.model != recipe.base_model for e in entries):
        return [*entries, ModelEntry(recipe.base_model)]
    return entries


def _check_compatible(reference: Checkpoint, checkpoints: dict[str, Checkpoint]) -> None:
    for ckpt in checkpoints.values():
        if ckpt is reference:
            continue
        if ckpt.architecture != reference.architecture:
            raise CheckpointError(f"{ckpt.path}: architecture {ckpt.architecture} differs from "
                                  f"{reference.name}'s {reference.architecture}")
        # Parsing a tokenizer.json (a 32K vocabulary) costs a large share of a 0.5B merge;
        # fine-tunes of one base usually ship the same file, which needs no parsing.
        same_file = reference.tokenizer_digest is not None and ckpt.tokenizer_digest == reference.tokenizer_digest
        ref_fp, fp = (None, None) if same_file else (reference.vocabulary_fingerprint, ckpt.vocabulary_fingerprint)
        if ref_fp is not None and fp is not None and fp != ref_fp:
            raise CheckpointError(f"{ckpt.path}: tokenizer vocabulary differs from {reference.name}'s; "
                                  "merged embeddings would mix unrelated tokens")
        if ckpt.config.get("vocab_size") != reference.config.get("vocab_size"):
            raise CheckpointError(f"{ckpt.path}: vocab_size {ckpt.config.get('vocab_size')} differs from "
                                  f"{reference.name}'s {reference.config.get('vocab_size')}")


def _check_tensor(ckpt: Checkpoint, name: str, shape: tuple[int, ...], reference: Checkpoint) -> None:
    if name not in ckpt.index:
        raise CheckpointError(f"{ckpt.path}: tensor '{name}' is missing (present in {reference.name})")
    if ckpt.shape(name) != shape:
        raise CheckpointError(f"{ckpt.path}: tensor '{name}' has shape {list(ckpt.shape(name))}, "
                              f"{reference.name} has {list(shape)}")


def _value(param: str, sources: tuple, tensor: str, position: float, layer: int | None,
           num_layers: int) -> Any:
    """The first source that gives ``param`` a value for this tensor (a filter list may give none)."""
    for source in sources:
        if param in source:
            value = resolve(source[param], tensor, position, layer, num_layers)
            if value is not None:
                return value
    return None


def _tensor_params(recipe: Recipe, method: MergeMethod, merged: list[ModelEntry], name: str,
                   position: float, layer: int | None, num_layers: int) -> dict[str, Any]:
    """Resolved values for one tensor: scalars for global parameters, one per model otherwise.

    A per-model value comes from the model's own entry, else from the top-level parameters.
    """
    params: dict[str, Any] = {}
    where = (name, position, layer, num_layers)
    for spec in method.params:
        if spec.scope == "global":
            value = _value(spec.name, (recipe.parameters,), *where)
            if value is not None:
                params[spec.name] = value
            continue
        values = [_value(spec.name, (e.parameters, recipe.parameters), *where) for e in merged]
        values = [spec.default if v is None else v for v in values]
        if any(v is not None for v in values):
            params[spec.name] = values
    return params


def _seed(recipe: Recipe, name: str) -> int:
    return zlib.crc32(f"{recipe.seed}:{name}".encode())


def _order_key(name: str) -> tuple:
    layer = layer_of(name)
    if layer is not None:
        return (1, layer, name)
    return (0 if "embed" in name else 2, 0, name)


def _plan_models(recipe: Recipe, method: MergeMethod, checkpoints: dict[str, Checkpoint],
                 reference: Checkpoint, dtype: torch.dtype | None) -> tuple[list[TensorMerge], int]:
    merged = _merged_entries(recipe, method, list(recipe.models))
    if not merged:
        raise RecipeError(f"models: {method.name} needs at least one model besides the base model")
    use_base = method.base != "unused" and recipe.base_model is not None
    ckpts = [checkpoints[e.model] for e in merged]
    num_layers = reference.num_layers
    merges = []
    for name in sorted(reference.index, key=_order_key):
        info = reference.index[name]
        for ckpt in ckpts:
            _check_tensor(ckpt, name, info.shape, reference)
        layer = _value_layer(name, num_layers)
        position = _position(layer_of(name), num_layers)
        merges.append(TensorMerge(
            name=name, shape=info.shape, dtype=dtype or info.dtype,
            inputs=tuple(TensorRef(e.model, name) for e in merged),
            base=TensorRef(recipe.base_model, name) if use_base else None,
            params=_tensor_params(recipe, method, merged, name, position, layer, num_layers),
            seed=_seed(recipe, name),
        ))
    return merges, num_layers


def _value_layer(name: str, num_layers: int) -> int | None:
    """The layer a tensor counts as for per-group values: None before the stack, past it after."""
    layer = layer_of(name)
    if layer is None and "embed" not in name:
        return num_layers
    return layer


def _position(layer: int | None, num_layers: int) -> float:
    """Where a tensor sits for gradient values: mergekit's t (0 outside the layer stack)."""
    if layer is None:
        return 0.0
    return layer / (num_layers - 1) if num_layers > 1 else 1.0


def _plan_slices(recipe: Recipe, method: MergeMethod, checkpoints: dict[str, Checkpoint],
                 reference: Checkpoint, dtype: torch.dtype | None) -> tuple[list[TensorMerge], int]:
    merges: list[TensorMerge] = []

    def add(out_name: str, entries: list[ModelEntry], in_names: list[str], position: float,
            out_layer: int | None, slice_len: int) -> None:
        base_entry = next((e for e in entries if e.model == recipe.base_model), None)
        merged = _merged_entries(recipe, method, entries)
        if not merged:
            raise RecipeError(f"slices: {method.name} needs a source besides the base model")
        src_name = dict(zip([e.model for e in entries], in_names))
        first = checkpoints[merged[0].model]
        shape = first.shape(src_name[merged[0].model]) if src_name[merged[0].model] in first.index else None
        for e in entries:
            if shape is None:
                break
            _check_tensor(checkpoints[e.model], src_name[e.model], shape, first)
        if shape is None:
            raise CheckpointError(f"{first.path}: tensor '{src_name[merged[0].model]}' is missing")
        use_base = method.base != "unused" and base_entry is not None
        if method.base == "required" and base_entry is None:
            raise RecipeError(f"slices: {method.name} needs the base model among each slice's sources")
        merges.append(TensorMerge(
            name=out_name, shape=shape, dtype=dtype or first.index[src_name[merged[0].model]].dtype,
            inputs=tuple(TensorRef(e.model, src_name[e.model]) for e in merged),
            base=TensorRef(base_entry.model, src_name[base_entry.model]) if use_base else None,
            params=_tensor_params(recipe, method, merged, out_name, position, out_layer, slice_len),
            seed=_seed(recipe, out_name),
        ))

    for sl in recipe.slices:
        for src in sl.sources:
            if src.layer_range[1] > checkpoints[src.model].num_layers:
                raise RecipeError(f"slices: layer_range {list(src.layer_range)} is beyond "
                                  f"{checkpoints[src.model].name}'s {checkpoints[src.model].num_layers} layers")
    first_sources, last_sources = list(recipe.slices[0].sources), list(recipe.slices[-1].sources)
    non_layer = sorted((n for n in reference.index if layer_of(n) is None), key=_order_key)
    for name in (n for n in non_layer if "embed" in n):
        add(name, first_sources, [name] * len(first_sources), 0.0, None, 1)
    out_layer = 0
    for sl in recipe.slices:
        template = checkpoints[sl.sources[0].model]
        start0 = sl.sources[0].layer_range[0]
        layer_names = sorted(n for n in template.index if layer_of(n) == start0)
        for offset in range(sl.num_layers):
            position = offset / (sl.num_layers - 1) if sl.num_layers > 1 else 1.0
            for name in layer_names:
                in_names = [with_layer(name, s.layer_range[0] + offset) for s in sl.sources]
                add(with_layer(name, out_layer), list(sl.sources), in_names, position, offset, sl.num_layers)
            out_layer += 1
    for name in (n for n in non_layer if "embed" not in n):
        add(name, last_sources, [name] * len(last_sources), 0.0, 1, 1)
    return merges, out_layer



def execute(merge: TensorMerge, method: MergeMethod, inputs: list[torch.Tensor],
            base: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run one planned tensor merge on already-fetched tensors (any device).

    ``out`` (the merge's dtype and shape) receives the result if the method `writes_into` it.
    """
    inputs = [t.to(merge.dtype) for t in inputs]
    if base is not None:
        base = base.to(merge.dtype)
    generator = None
    if method.randomized:
        generator = torch.Generator(device=inputs[0].device).manual_seed(merge.seed)
    return method(inputs, base, generator=generator, out=out, **merge.params)
