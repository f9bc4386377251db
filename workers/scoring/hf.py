"""HF backend: lm-eval's `HFLM` over one live transformers model, rewritten per candidate.

The live model is loaded once from the reference checkpoint (the one whose config and
tokenizer the merged model shares); each candidate's merged tensors are then copied into its
parameters in place by `ResidentSources.apply`. No reload from disk, no new model object.
"""

from __future__ import annotations

import time

import torch

from search_spaces.recipe import Recipe, thaw
from workers.plan import TORCH_DTYPES
from workers.resident import ResidentSources
from workers.scoring.backend import LoadReport, non_finite, release_memory
from workers.scoring.result import EngineError
from workers.scoring.spec import EvalSettings


class HFBackend:
    name = "hf"

    def __init__(self, model_paths: list[str], settings: EvalSettings, reference: str | None = None,
                 sources: ResidentSources | None = None):
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.reference = reference or model_paths[0]
        dtype = TORCH_DTYPES[settings.dtype] if settings.dtype else None
        self.sources = sources if sources is not None else ResidentSources(model_paths, settings.device)
        engine_kwargs = thaw(settings.engine_kwargs)
        if dtype is not None:
            engine_kwargs.setdefault("dtype", dtype)
        self.model = AutoModelForCausalLM.from_pretrained(self.reference, **engine_kwargs).to(settings.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.reference)
        self._lm = HFLM(pretrained=self.model, tokenizer=self.tokenizer, batch_size=settings.batch_size,
                        **thaw(settings.lm_kwargs))

    @property
    def lm(self):
        return self._lm

    @torch.no_grad()
    def load(self, recipe: Recipe) -> LoadReport:
        start = time.perf_counter()
        self.sources.apply(recipe, self.model)
        bad = non_finite(self.model.named_parameters())
        return LoadReport(seconds=time.perf_counter() - start, non_finite=bad)

    def recover(self) -> None:
        release_memory(self.settings.device)

    def fatal(self, exc: BaseException) -> bool:
        return isinstance(exc, EngineError)

    def close(self) -> None:
        self._lm = None
        self.model = None
        release_memory(self.settings.device)
