"""In-memory merging from source tensors kept resident, into a live model.

A worker loads its source models once (CPU or GPU) and then materialises thousands of
candidate recipes: each one is planned (cheap, cached by recipe hash), merged tensor by
tensor on the sources' device, and copied into the live model's parameters. No disk, no new
model object per candidate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

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
        """Write the merged weights into ``model`` in place (shapes must match)."""
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        tied = getattr(model.config, "tie_word_embeddings", False) if hasattr(model, "config") else False
        seen = set()
        for name, tensor in self.merged(recipe):
            target = params.get(name)
            if target is None:
                raise RecipeError(f"tensor '{name}' of the merged model has no place in the live model")
            if target.shape != tensor.shape:
                raise RecipeError(f"tensor '{name}': merged shape {list(tensor.shape)} does not fit "
                                  f"the live model's {list(target.shape)}")
            target.copy_(tensor)
            seen.add(name)
        missing = [n for n, _ in model.named_parameters() if n not in seen and not (tied and n == "lm_head.weight")]
        if missing:
            raise RecipeError(f"the merged model has no tensor for the live model's '{missing[0]}'")
