"""Layer paths in one long-lived vLLM engine: started once from the padded reference, swapped in place.

The engine is built from model A padded with identity layers to the longest allowed path
(`workers.data_flow.padded_reference`), so it never restarts: each candidate path is folded
tensor by tensor from A's and B's resident tensors and streamed into vLLM's public
``reload_weights``, the unused slots zeroed (exact identities). The worker extension is
`workers.scoring.vllm_extension.MergeExtension` with its two hooks replaced, so tied weights,
CPU MoE repacking and errors-as-data are the same code.
"""

from __future__ import annotations

import torch

from workers.scoring.vllm_backend import VLLMBackend
from workers.scoring.vllm_extension import MergeExtension, MergeRefused

EXTENSION = "workers.data_flow_vllm.DataFlowExtension"


class DataFlowExtension(MergeExtension):
    """Worker mix-in: A and B resident, any layer path folded and reloaded in place."""

    def _load_sources(self, model_paths: list[str], reference: str, where: torch.device) -> set[str]:
        from workers.checkpoint import Checkpoint
        from workers.data_flow import DataFlowSources

        self._dfs_sources = DataFlowSources(model_paths, where)
        padded = Checkpoint.open(reference)
        self._dfs_depth = padded.num_layers
        self._dfs_layout = {n: tuple(i.shape) for n, i in padded.index.items()}
        return set(padded.index)

    def _prepare(self, recipe):
        from search_spaces.data_flow import LayerPath
        from workers.data_flow import fold, plan_path

        entries = plan_path(LayerPath.from_recipe(recipe), self._dfs_sources.checkpoints, pad_to=self._dfs_depth)
        got = {e.name: tuple(e.shape) for e in entries}
        if got != self._dfs_layout:
            bad = sorted(set(got.items()) ^ set(self._dfs_layout.items()))[0][0]
            raise MergeRefused(f"the path's tensor '{bad}' does not fit the engine's padded model")
        tensors = self._dfs_sources.tensors

        def stream(failures: list[str]):
            for e in entries:
                yield e.name, fold(e, tensors[e.model][e.source])

        return stream


class DataFlowVLLMBackend(VLLMBackend):
    """`VLLMBackend` over the padded reference (not a source), with `DataFlowExtension` in its worker."""

    extension = EXTENSION

    def _sources(self, model_paths: list[str]) -> list[str]:
        return model_paths
