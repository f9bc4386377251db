"""Merging inside vLLM's worker process: ``LLM(worker_extension_cls=<this class>)``.

vLLM mixes this class into its worker, so ``llm.collective_rpc("merge_apply", args=(...))``
runs these methods where the model lives. The worker keeps the source models resident (on
the engine's device, so a GPU merges on the GPU; or on the CPU), merges a recipe tensor by tensor and streams the
result into the worker's public ``reload_weights(weights_iterator=...)``, which re-runs the
model's own weight loading and post-processing (on CPU the weights are repacked after
loading, so copying into parameters directly would be wrong).

Only plain data crosses the RPC boundary: model paths, the recipe as canonical JSON, and a
small dict back. No callables, no pickled objects.

A reload must never stop half way: vLLM moves each layer to the meta device while it reloads,
so an exception in the middle would leave the engine unusable. Everything that can be checked
is checked before the reload starts; a merge that still fails for one tensor streams that
tensor from the first source instead, finishes the reload, and reports the error, so the
candidate fails and the engine stays ready for the next one. Nothing here raises through
the RPC: errors come back as data.

Tied weights (issue 12). With ``tie_word_embeddings`` vLLM builds the output head as its own
module (``lm_head``, a ``ParallelLMHead``) whose ``weight`` is the very Parameter of
``model.embed_tokens``, and the checkpoint has no ``lm_head.weight`` (the model's loader
skips it). ``reload_weights`` re-runs ``process_weights_after_loading`` only for modules that
received a tensor; ``lm_head`` receives none, so vLLM just puts its old (shared, and now
updated) Parameter back. But on CPU, ``UnquantizedEmbeddingMethod.process_weights_after_loading``
built ``lm_head.cpu_linear``, a oneDNN/SGL handle holding a packed *copy* of the weight, and
the logits go through that handle: the head silently kept the weights of the model the engine
started with. (Gemma2 is unaffected: it computes logits with ``embed_tokens`` itself.) So at
``merge_init`` the worker finds every module that shares a Parameter with another module and
gets no tensor of its own ("followers"), and after each reload re-runs their quant method's
post-processing, which rebuilds the kernel from the shared weight. Where that cannot be exact
(a follower whose post-processing is not known to be re-runnable; one storage that two
checkpoint tensors load into, e.g. a head vLLM re-tied because the reference's copy equals the
embedding, while a merge can make them differ) ``merge_init`` refuses with one line.

MoE on CPU (same family of bug, found by the swap matrix): on a reload
``UnquantizedFusedMoEMethod._setup_kernel`` treats the call as a "weight update" and skips
``moe_kernel.fused_experts.process_weights_after_loading``, which is where the CPU experts
kernel prepacks ``w13``/``w2``; the reloaded experts stayed in plain layout and the kernel
misread them. Those layers are re-packed after each reload as well.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch


class MergeRefused(Exception):
    """A candidate that cannot replace the engine's model tensor for tensor (checked before any reload)."""


class MergeExtension:
    """Worker mix-in: resident sources and in-place candidate swaps (methods prefixed merge_).

    The RPC methods are shared; what a candidate is made of comes from two hooks that
    subclasses replace (`workers.data_flow_vllm` folds layer paths): `_load_sources` and
    `_prepare`.
    """

    def merge_init(self, model_paths: list[str], reference: str, device: str = "engine") -> dict[str, Any]:
        """Load the source models once: onto the engine's device (``"engine"``) or ``"cpu"``."""
        try:
            start = time.perf_counter()
            where = self.device if device == "engine" else torch.device(device)
            streamed = self._load_sources(list(model_paths), reference, where)
            followers, problem = _tied_followers(self.model_runner.get_model(), streamed)
            if problem:
                return {"ok": False, "error": f"no exact in-place swap into this engine: {problem}"}
            self._merge_followers = followers
            return {"ok": True, "seconds": time.perf_counter() - start, "error": None}
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which raises it there
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def merge_apply(self, recipe_json: str) -> dict[str, Any]:
        """Build the candidate and reload it into the live model; report timing and bad tensors."""
        from search_spaces.recipe import Recipe
        from workers.scoring.backend import is_finite

        start = time.perf_counter()
        try:
            stream = self._prepare(Recipe.from_dict(json.loads(recipe_json)))
        except MergeRefused as exc:
            return _error(str(exc), start, kind="merge_error")
        except Exception as exc:  # noqa: BLE001
            return _error(f"{type(exc).__name__}: {exc}", start, kind=_kind(exc))

        failures: list[str] = []
        non_finite: list[str] = []

        def weights():
            for name, tensor in stream(failures):
                if len(non_finite) < 5 and not is_finite(tensor):
                    non_finite.append(name)
                yield name, tensor

        try:
            self.reload_weights(weights_iterator=weights())
            _reprocess(self._merge_followers, self.vllm_config)
        except Exception as exc:  # noqa: BLE001 - the engine may now be broken; say so
            return _error(f"{type(exc).__name__} while reloading weights: {exc}", start, kind="engine_error")
        if failures:
            return _error(failures[0], start, kind=failures[1])
        return {"ok": True, "seconds": time.perf_counter() - start, "non_finite": non_finite,
                "error": None, "kind": None}

    def _load_sources(self, model_paths: list[str], reference: str, where: torch.device) -> set[str]:
        """Make the sources resident; returns the names of the tensors every candidate streams."""
        from workers.resident import ResidentSources

        self._merge_sources = ResidentSources(model_paths, device=where)
        self._merge_reference = self._merge_sources.checkpoints[reference].index
        return set(self._merge_reference)

    def _prepare(self, recipe):
        """Plan ``recipe`` (raising `MergeRefused` if it cannot fit) and return ``stream(failures)``,
        which yields (name, tensor) for the reload. A tensor that fails to merge is streamed
        from the first source instead, so the reload finishes; the error goes into ``failures``
        as (message, kind)."""
        from workers.plan import execute

        sources = self._merge_sources
        plan = sources.plan(recipe)
        problem = _layout_problem(plan, self._merge_reference)
        if problem:
            raise MergeRefused(problem)

        def stream(failures: list[str]):
            for merge in plan.merges:
                try:
                    inputs = [sources.get(r) for r in merge.inputs]
                    base = sources.get(merge.base) if merge.base is not None else None
                    tensor = execute(merge, plan.method, inputs, base)
                except Exception as exc:  # noqa: BLE001 - finish the reload, then report
                    if not failures:
                        failures.append(f"{type(exc).__name__} merging '{merge.name}': {exc}")
                        failures.append(_kind(exc))
                    tensor = sources.get(merge.inputs[0])
                yield merge.name, tensor

        return stream


def _tied_followers(model: torch.nn.Module, streamed: set[str]) -> tuple[list[torch.nn.Module], str | None]:
    """Modules that share a weight with another module and get no tensor of their own.

    Returns them, or a reason why an in-place reload cannot keep such a group exact.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    groups: dict[int, list[tuple[str, torch.nn.Module]]] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            groups.setdefault(id(param), []).append((f"{module_name}.{param_name}", module))
    followers: list[torch.nn.Module] = []
    for name, module in model.named_modules():
        experts = _moe_experts_to_repack(module)
        if experts is not None:
            size = experts.moe_config.intermediate_size_per_partition
            if experts._padded_intermediate_size(experts.moe_config) != size:
                return [], (f"'{name}': the CPU MoE kernel pads the experts' intermediate size {size}, "
                            "and a reload cannot redo that padding in place")
            followers.append(module)
    for members in groups.values():
        if len(members) < 2:
            continue
        loaded = [name for name, _ in members if name in streamed]
        if len(loaded) > 1:
            return [], (f"{' and '.join(loaded)} are one tensor in the engine, but the checkpoints carry "
                        "both and a merge can make them differ; start the engine with "
                        "hf_overrides={'tie_word_embeddings': False}")
        for name, module in members:
            if name in loaded or module in followers:
                continue
            method = getattr(module, "quant_method", None)
            if method is None:
                continue  # computes with the shared Parameter itself: nothing derived to refresh
            if not isinstance(method, UnquantizedEmbeddingMethod):
                return [], (f"'{name}' shares its weight with '{loaded[0] if loaded else members[0][0]}' and "
                            f"derives kernel weights from it with {type(method).__name__}, which cannot be "
                            "re-derived after a reload")
            followers.append(module)
    return followers, None


def _reprocess(modules: list[torch.nn.Module], vllm_config) -> None:
    """Rebuild what ``process_weights_after_loading`` derived from a (shared, reloaded) weight."""
    if not modules:
        return
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(vllm_config), torch.no_grad():
        for module in modules:
            experts = _moe_experts_to_repack(module)
            if experts is not None:
                experts.process_weights_after_loading(module)
            else:
                module.quant_method.process_weights_after_loading(module)


def _moe_experts_to_repack(module: torch.nn.Module):
    """The CPU expert kernel of an MoE layer, whose prepacking a reload skips (see the docstring)."""
    kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
    experts = getattr(kernel, "fused_experts", None)
    if experts is None or type(experts).__name__ != "CPUUnquantizedExperts":
        return None
    return experts


def _layout_problem(plan, reference_index) -> str | None:
    """Why the merged model cannot replace the engine's model tensor for tensor, if it cannot."""
    merged = {m.name: tuple(m.shape) for m in plan.merges}
    missing = sorted(set(reference_index) - set(merged))
    extra = sorted(set(merged) - set(reference_index))
    if missing or extra:
        return (f"the merged model does not fit the live engine's model: "
                f"{len(missing)} tensors missing (e.g. {missing[:1]}), {len(extra)} extra (e.g. {extra[:1]})")
    for name, shape in merged.items():
        if tuple(reference_index[name].shape) != shape:
            return f"tensor '{name}': merged shape {list(shape)} does not fit the engine's {list(reference_index[name].shape)}"
    return None


def _kind(exc: BaseException) -> str:
    from workers.scoring.backend import is_oom

    return "oom" if is_oom(exc) else "merge_error"


def _error(message: str, start: float, kind: str) -> dict[str, Any]:
    return {"ok": False, "seconds": time.perf_counter() - start, "non_finite": [], "error": message, "kind": kind}
