"""In-memory merging from source tensors kept resident, into a live model.

A worker loads its source models once (CPU or GPU) and then materialises thousands of
candidate recipes: each one is planned (cheap, cached by recipe hash), merged tensor by
tensor on the sources' device, and copied into the live model's parameters. No disk, no new
model object per candidate. Checkpoint names are mapped onto live parameters by transformers'
own load-time conversion (`LivePlacement`), so fused parameters (MoE experts) are exact too.
"""

from __future__ import annotations

import copy
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from search_spaces.errors import RecipeError
from search_spaces.recipe import Recipe
from workers.checkpoint import Checkpoint
from workers.plan import MergePlan, TensorRef, execute, plan_merge


class ResidentSources:
    """Every tensor of a fixed set of models, held in memory on one device."""

    def __init__(self, model_paths: list[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.checkpoints = {path: Checkpoint.open(path) for path in model_paths}
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        for path, ckpt in self.checkpoints.items():
            with ckpt.reader() as reader:
                self.tensors[path] = {
                    name: reader.read(name).to(self.device, dtype=dtype or ckpt.index[name].dtype)
                    for name in ckpt.index
                }
        self._plans: OrderedDict[str, MergePlan] = OrderedDict()
        self._placements: dict[tuple[int, tuple[str, ...]], tuple[weakref.ref, LivePlacement]] = {}

    def _placement(self, model: torch.nn.Module, names: tuple[str, ...]) -> LivePlacement:
        """One placement per live model and name set (building one runs every rename regex);
        held by weak reference, so a closed backend's model is freed."""
        key = (id(model), names)
        cached = self._placements.get(key)
        if cached is None or cached[0]() is not model:
            self._placements = {k: v for k, v in self._placements.items() if v[0]() is not None}
            cached = self._placements[key] = (weakref.ref(model), LivePlacement(model, list(names)))
        return cached[1]

    def get(self, ref: TensorRef) -> torch.Tensor:
        return self.tensors[ref.model][ref.name]

    def plan(self, recipe: Recipe) -> MergePlan:
        missing = [p for p in recipe.model_paths if p not in self.checkpoints]
        if missing:
            raise RecipeError(f"{missing[0]}: not among this worker's resident models "
                              f"({', '.join(self.checkpoints)})")
        plan = self._plans.get(recipe.hash)
        if plan is None:
            plan = plan_merge(recipe, self.checkpoints)
            self._plans[recipe.hash] = plan
            if len(self._plans) > 64:
                self._plans.popitem(last=False)
        return plan

    def merged(self, recipe: Recipe) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for every tensor of the merged model, on this device."""
        plan = self.plan(recipe)
        for merge in plan.merges:
            inputs = [self.get(r) for r in merge.inputs]
            base = self.get(merge.base) if merge.base is not None else None
            yield merge.name, execute(merge, plan.method, inputs, base)

    @torch.no_grad()
    def apply(self, recipe: Recipe, model: torch.nn.Module) -> None:
        """Write the merged weights into ``model`` in place (shapes must match).

        Checkpoint names reach the live parameters through `LivePlacement`, i.e. through the
        same renamings and fusions ``from_pretrained`` applied when it loaded ``model``.
        """
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        tied = getattr(model.config, "tie_word_embeddings", False) if hasattr(model, "config") else False
        placement = self._placement(model, tuple(m.name for m in self.plan(recipe).merges))
        seen = set()

        def put(name: str, tensor: torch.Tensor, source: str) -> None:
            target = params.get(name)
            if target is None:
                raise RecipeError(f"tensor '{source}' of the merged model has no place in the live model")
            if target.shape != tensor.shape:
                raise RecipeError(f"tensor '{source}': merged shape {list(tensor.shape)} does not fit "
                                  f"the live model's '{name}' {list(target.shape)}")
            target.copy_(tensor)
            seen.add(name)

        pending: dict[str, dict[str, torch.Tensor]] = {}  # fused groups still missing members
        for name, tensor in self.merged(recipe):
            for live_name, live_tensor in placement.place(name, tensor, model, pending):
                put(live_name, live_tensor, name)
        missing = [n for n, _ in model.named_parameters() if n not in seen and not (tied and n == "lm_head.weight")]
        if missing:
            raise RecipeError(f"the merged model has no tensor for the live model's '{missing[0]}'")


class LivePlacement:
    """Where each checkpoint tensor goes in a live transformers model, and in what form.

    transformers 5 renames and fuses checkpoint tensors while loading (Mixtral's per-expert
    ``block_sparse_moe.experts.<i>.w1/w3`` become one ``mlp.experts.gate_up_proj``), so a
    checkpoint name is not always a parameter name. This replays, per tensor, the very
    conversion ``from_pretrained`` used: ``get_model_conversion_mapping`` for the model, keys
    renamed by ``rename_source_key``, and each fused group converted by its ``WeightConverter``
    once all of its members are merged, members added in the loader's order (``dot_natural_key``),
    which is the order ``MergeModulelist`` stacks experts in. Models transformers does not
    convert (and plain modules) map names to themselves.
    """

    def __init__(self, model: torch.nn.Module, names: list[str]):
        self.direct: dict[str, str] = {}
        self.groups: dict[str, tuple[Any, list[tuple[str, str]]]] = {}  # live key -> (converter, members)
        self.group_of: dict[str, str] = {}
        try:
            from transformers import PreTrainedModel
            from transformers.conversion_mapping import get_model_conversion_mapping
            from transformers.core_model_loading import (WeightConverter, WeightRenaming, dot_natural_key,
                                                         rename_source_key)
        except ImportError:  # pragma: no cover - transformers is a dependency of the workers
            PreTrainedModel = None
        if PreTrainedModel is None or not isinstance(model, PreTrainedModel):
            self.direct = {n: n for n in names}
            return
        mapping = get_model_conversion_mapping(model)
        renamings = [t for t in mapping if isinstance(t, WeightRenaming)]
        converters = [t for t in mapping if isinstance(t, WeightConverter)]
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        live = model.state_dict()
        prefix = model.base_model_prefix
        members: dict[str, list[tuple[str, str]]] = {}
        for name in sorted(names, key=dot_natural_key):
            key, pattern = rename_source_key(name, renamings, converters, prefix, live)
            if key not in live and name in live:  # as the loader: keep the name, fix the prefix only
                key, pattern = rename_source_key(name, [], [], base_model_prefix=prefix, meta_state_dict=live)
            if pattern is None:
                self.direct[name] = key
            else:
                members.setdefault(key, []).append((name, pattern))
                self.group_of[name] = key
        for key, group in members.items():
            self.groups[key] = (by_pattern[group[0][1]], group)

    def place(self, name: str, tensor: torch.Tensor, model: torch.nn.Module,
              pending: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """The live ``(parameter, tensor)`` pairs of ``model`` that checkpoint tensor ``name``
        completes; members of a fused group wait in ``pending`` (one dict per apply)."""
        if name in self.direct:
            return [(self.direct[name], tensor)]
        key = self.group_of.get(name)
        if key is None:
            return [(name, tensor)]  # unknown to the model: the caller refuses it by name
        group = pending.setdefault(key, {})
        group[name] = tensor
        template, members = self.groups[key]
        if len(group) < len(members):
            return []
        del pending[key]
        converter = copy.deepcopy(template)
        for member, pattern in members:
            converter.add_tensor(key, member, pattern, group[member])
        out = converter.convert(key, model=model, config=model.config)
        return [(k, v[0] if isinstance(v, list) else v) for k, v in out.items()]
