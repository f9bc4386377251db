"""Layer paths in one long-lived vLLM engine: started once from the padded reference, swapped in place.

The engine is built from model A padded with identity layers to the longest allowed path
(`workers.data_flow.padded_reference`), so it never restarts: each candidate path is folded
tensor by tensor from A's and B's resident tensors and streamed into vLLM's public
``reload_weights``, the unused slots zeroed (exact identities). The worker extension reuses
`workers.scoring.vllm_extension`'s handling of tied weights and CPU MoE repacking, and
returns errors as data, never raising through the RPC.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from search_spaces.recipe import thaw
from workers.scoring.spec import EvalSettings
from workers.scoring.vllm_backend import VLLMBackend
from workers.scoring.vllm_extension import MergeExtension, _error, _kind, _reprocess, _tied_followers

EXTENSION = "workers.data_flow_vllm.DataFlowExtension"


class DataFlowExtension(MergeExtension):
    """Worker mix-in: A and B resident, any layer path folded and reloaded in place."""

    def merge_init(self, model_paths: list[str], reference: str, device: str = "engine") -> dict[str, Any]:
        from workers.checkpoint import Checkpoint
        from workers.data_flow import DataFlowSources

        try:
            start = time.perf_counter()
            where = self.device if device == "engine" else torch.device(device)
            self._dfs_sources = DataFlowSources(list(model_paths), where)
            padded = Checkpoint.open(reference)
            self._dfs_depth = padded.num_layers
            self._dfs_layout = {n: tuple(i.shape) for n, i in padded.index.items()}
            followers, problem = _tied_followers(self.model_runner.get_model(), set(padded.index))
            if problem:
                return {"ok": False, "error": f"no exact in-place swap into this engine: {problem}"}
            self._merge_followers = followers
            return {"ok": True, "seconds": time.perf_counter() - start, "error": None}
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which raises it there
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def merge_apply(self, recipe_json: str) -> dict[str, Any]:
        from search_spaces.data_flow import LayerPath
        from search_spaces.recipe import Recipe
        from workers.data_flow import fold, plan_path
        from workers.scoring.backend import is_finite

        start = time.perf_counter()
        try:
            path = LayerPath.from_recipe(Recipe.from_dict(json.loads(recipe_json)))
            entries = plan_path(path, self._dfs_sources.checkpoints, pad_to=self._dfs_depth)
            got = {e.name: tuple(e.shape) for e in entries}
            if got != self._dfs_layout:
                bad = sorted(set(got.items()) ^ set(self._dfs_layout.items()))[0][0]
                return _error(f"the path's tensor '{bad}' does not fit the engine's padded model", start,
                              kind="merge_error")
        except Exception as exc:  # noqa: BLE001
            return _error(f"{type(exc).__name__}: {exc}", start, kind=_kind(exc))
        tensors = self._dfs_sources.tensors
        non_finite: list[str] = []

        def weights():
            for e in entries:
                tensor = fold(e, tensors[e.model][e.source])
                if len(non_finite) < 5 and not is_finite(tensor):
                    non_finite.append(e.name)
                yield e.name, tensor

        try:
            self.reload_weights(weights_iterator=weights())
            _reprocess(self._merge_followers, self.vllm_config)
        except Exception as exc:  # noqa: BLE001 - the engine may now be broken; say so
            return _error(f"{type(exc).__name__} while reloading weights: {exc}", start, kind="engine_error")
        return {"ok": True, "seconds": time.perf_counter() - start, "non_finite": non_finite,
                "error": None, "kind": None}


class DataFlowVLLMBackend(VLLMBackend):
    """`VLLMBackend` over the padded reference, with `DataFlowExtension` in its worker."""

    def __init__(self, model_paths: list[str], settings: EvalSettings, reference: str):
        from vllm import LLM

        from workers.scoring.vllm_lm import VLLMEvalLM

        self.settings = settings
        self.reference = reference
        kwargs = thaw(settings.engine_kwargs)
        kwargs.setdefault("seed", settings.seed)
        if settings.dtype is not None:
            kwargs.setdefault("dtype", settings.dtype)
        if "worker_extension_cls" in kwargs:
            raise ValueError("engine_kwargs.worker_extension_cls is set by the vLLM backend itself")
        self.llm = LLM(model=reference, worker_extension_cls=EXTENSION, **kwargs)
        self._lm = None
        sources_on = "cpu" if settings.device == "cpu" else "engine"
        try:
            for reply in self.llm.collective_rpc("merge_init", args=(list(model_paths), reference, sources_on)):
                if not reply["ok"]:
                    raise RuntimeError(f"vLLM worker could not load the source models: {reply['error']}")
        except BaseException:
            self.close()
            raise
        self._lm = VLLMEvalLM(self.llm, batch_size=settings.batch_size, **thaw(settings.lm_kwargs))
