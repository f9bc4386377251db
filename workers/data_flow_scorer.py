"""What a worker actor runs in a data-flow search: one live model, sized once, any path swapped in.

The live model starts from A padded with identity layers to ``max_path_length`` (written once
per worker into a cache folder keyed by A and the depth, never per candidate); each candidate
path is then folded and written in place by `workers.data_flow.DataFlowSources`, the unused
slots zeroed. No engine restart and no disk per candidate. HF and vLLM backends.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from search_spaces.errors import UserError
from workers.candidate_scorer import CandidateScorer
from workers.checkpoint import Checkpoint
from workers.data_flow import DataFlowSources, padded_reference
from workers.outcome import Fidelity
from workers.scoring import EvalSettings, TaskSpec


def cache_root() -> Path:
    return Path(os.environ.get("EVOLVE_CACHE") or Path(tempfile.gettempdir()) / "evolve-merge-cache")


def padded_reference_cached(model_a: str, depth: int, root: Path | None = None) -> Path:
    """The padded reference for (A, depth), built at most once per machine and cache folder."""
    a = Checkpoint.open(model_a)
    fingerprint = json.dumps({"path": str(Path(model_a).resolve()), "config": a.config, "depth": depth,
                              "tensors": sorted((n, list(i.shape)) for n, i in a.index.items()),
                              "mtime": max(i.file.stat().st_mtime_ns for i in a.index.values())}, sort_keys=True)
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    out = (root or cache_root()) / "data_flow" / f"{a.name}-{depth}-{key}"
    try:
        return padded_reference(model_a, depth, out)
    except UserError:
        if (out / "config.json").is_file():  # another worker on this machine wrote it first
            return out
        raise


class DataFlowCandidateScorer(CandidateScorer):
    """A `workers.outcome.RecipeScorer` for layer-path recipes, on the HF backend."""

    def __init__(self, models: list[str], max_path_length: int, settings: dict[str, Any],
                 tasks: list[dict[str, Any]], cache_dir: str | None = None):
        from workers.scoring.harness import Scorer
        from workers.scoring.hf import HFBackend

        self.settings = EvalSettings.from_dict(settings)
        if self.settings.backend not in ("hf", "vllm"):
            raise UserError(f"evaluation.backend: data-flow search scores on 'hf' or 'vllm', not "
                            f"'{self.settings.backend}'")
        self.tasks = {Fidelity.FULL: [TaskSpec.from_dict(t) for t in tasks]}  # full fidelity only
        reference = padded_reference_cached(models[0], max_path_length, Path(cache_dir) if cache_dir else None)
        if self.settings.backend == "vllm":
            from workers.data_flow_vllm import DataFlowVLLMBackend

            backend = DataFlowVLLMBackend(list(models), self.settings, reference=str(reference))
        else:
            sources = DataFlowSources(list(models), self.settings.device)
            backend = HFBackend(list(models), self.settings, reference=str(reference), sources=sources)
        self.scorer = Scorer(backend, self.settings)
