"""What is scored must be what is exported (issue 12): in-place swaps against fresh loads.

For every architecture of `tests.fixtures.architectures`, a live model is swapped in place
A -> B -> A and must then give the same greedy tokens, and log-probabilities within float
tolerance, as a freshly loaded copy of the directory `merge_to_disk` writes for A (what
``evolve merge`` exports). B must change the outputs, or a stale weight would go unnoticed.
The live model starts from the base checkpoint, not from A: a weight the swap forgets to
refresh then still holds the base's values and shows up.

Both backends: HF (``ResidentSources.apply`` into a live transformers model, against a fresh
``from_pretrained``) and vLLM (the product's `VLLMBackend`, whose worker merges and calls
``reload_weights``, against a fresh ``vllm.LLM``). The vLLM engines run inside the test process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``): a start then takes about 2 s instead of a new process's
imports, which keeps two engines per architecture affordable.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.fixtures.architectures import ARCHITECTURES, write_family
from search_spaces.recipe import Recipe
from workers.export import merge_to_disk

PROMPTS = [[1, 5, 9, 13], [1, 40, 41], [1, 100, 7, 7, 8], [1, 64]]
NEW_TOKENS = 8
ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "dtype": "float32", "seed": 0}


@dataclass
class Family:
    paths: list[str]  # base, two fine-tunes
    a: Recipe
    b: Recipe
    exported_a: Path


def ties(base: str, x: str, y: str, wx: float, wy: float) -> Recipe:
    return Recipe.from_dict({"merge_method": "ties", "base_model": base, "models": [
        {"model": x, "parameters": {"weight": wx, "density": 0.5}},
        {"model": y, "parameters": {"weight": wy, "density": 0.7}}]})


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Families built on first use, shared by both backends' tests."""
    made: dict[str, Family] = {}

    def get(name: str) -> Family:
        if name not in made:
            root = tmp_path_factory.mktemp(name)
            base, x, y = (str(p) for p in write_family(root, ARCHITECTURES[name]))
            a, b = ties(base, x, y, 0.6, 0.4), ties(base, x, y, 0.1, 0.9)
            made[name] = Family([base, x, y], a, b, merge_to_disk(a, root / "exported_a", progress=False))
        return made[name]

    return get


def assert_same_outputs(got, want, what: str) -> None:
    (tokens, logprobs), (ref_tokens, ref_logprobs) = got, want
    assert tokens == ref_tokens, f"{what}: greedy tokens differ from a fresh load of the export"
    torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(ref_logprobs), rtol=1e-4, atol=1e-4,
                               msg=f"{what}: log-probabilities differ from a fresh load of the export")


def differs(got, want) -> bool:
    """Other tokens, or the same tokens with other log-probabilities (Gemma2's tiny random model
    mostly repeats its last input token whatever the weights)."""
    (tokens, logprobs), (ref_tokens, ref_logprobs) = got, want
    if tokens != ref_tokens:
        return True
    return not torch.allclose(torch.tensor(logprobs), torch.tensor(ref_logprobs), rtol=1e-3, atol=1e-3)


# --- HF: ResidentSources.apply into a live transformers model --------------------------------


@torch.no_grad()
def hf_greedy(model) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy continuations and their log-probabilities, by full forward passes (no cache)."""
    tokens, logprobs = [], []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        out, lps = [], []
        for _ in range(NEW_TOKENS):
            lp = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
            nxt = int(lp.argmax())
            out.append(nxt)
            lps.append(float(lp[nxt]))
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        tokens.append(out)
        logprobs.append(lps)
    return tokens, logprobs


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_hf_in_place_swap_equals_fresh_load_of_export(families, arch):
    from transformers import AutoModelForCausalLM

    from workers.resident import ResidentSources

    fam = families(arch)
    want = hf_greedy(AutoModelForCausalLM.from_pretrained(fam.exported_a, dtype=torch.float32).eval())
    live = AutoModelForCausalLM.from_pretrained(fam.paths[0], dtype=torch.float32).eval()
    sources = ResidentSources(fam.paths)
    sources.apply(fam.a, live)
    assert_same_outputs(hf_greedy(live), want, f"{arch}, HF, after swapping in A")
    sources.apply(fam.b, live)
    assert differs(hf_greedy(live), want), f"{arch}, HF: swapping in B did not change the outputs"
    sources.apply(fam.a, live)
    assert_same_outputs(hf_greedy(live), want, f"{arch}, HF, after A -> B -> A")


# --- vLLM: the product's backend, merging inside the engine's worker ------------------------


@pytest.fixture(scope="module")
def in_process_vllm():
    """Run vLLM engines inside this process for this module only, then undo what that changed."""
    pytest.importorskip("vllm")
    import vllm.envs as envs

    set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        envs.disable_envs_cache()  # an earlier engine may have frozen the environment
        try:
            yield
        finally:
            torch.set_num_threads = set_num_threads
            envs.disable_envs_cache()


def vllm_greedy(llm) -> tuple[list[list[int]], list[list[float]]]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=0)
    results = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    tokens = [list(r.outputs[0].token_ids) for r in results]
    logprobs = [[step[t].logprob for t, step in zip(toks, r.outputs[0].logprobs, strict=True)]
                for toks, r in zip(tokens, results, strict=True)]
    return tokens, logprobs


def close_engine(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_vllm_in_place_swap_equals_fresh_engine_on_export(in_process_vllm, families, arch):
    from vllm import LLM

    from workers.scoring.spec import EvalSettings
    from workers.scoring.vllm_backend import VLLMBackend

    fam = families(arch)
    fresh = LLM(model=str(fam.exported_a), **ENGINE)
    want = vllm_greedy(fresh)
    close_engine(fresh)

    settings = EvalSettings(backend="vllm", dtype="float32", seed=0, engine_kwargs={
        k: v for k, v in ENGINE.items() if k not in ("dtype", "seed")})
    backend = VLLMBackend(fam.paths, settings)
    try:
        backend.load(fam.a)
        assert_same_outputs(vllm_greedy(backend.llm), want, f"{arch}, vLLM, after swapping in A")
        backend.load(fam.b)
        assert differs(vllm_greedy(backend.llm), want), f"{arch}, vLLM: swapping in B did not change the outputs"
        backend.load(fam.a)
        assert_same_outputs(vllm_greedy(backend.llm), want, f"{arch}, vLLM, after A -> B -> A")
    finally:
        llm = backend.llm
        backend.close()
        close_engine(llm)


def add_redundant_head(paths: list[str]) -> None:
    """Give each checkpoint an explicit ``lm_head.weight`` equal to its embedding, as fine-tuning
    tools often do for tied models; vLLM then loads it and re-ties the two into one tensor."""
    from safetensors.torch import load_file, save_file

    for path in paths:
        file = Path(path) / "model.safetensors"
        tensors = load_file(file)
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
        save_file(tensors, file, metadata={"format": "pt"})


@pytest.mark.slow
def test_vllm_refuses_an_engine_where_two_checkpoint_tensors_share_one_storage(in_process_vllm, tmp_path,
                                                                              monkeypatch):
    """A merge can make the head differ from the embedding, but the re-tied engine holds one
    tensor for both: refused at start-up, in one line, and the refused engine is shut down
    (not left to the garbage collector); untied by the override, it is exact."""
    import vllm
    from vllm import LLM

    from workers.scoring.spec import EvalSettings
    from workers.scoring.vllm_backend import VLLMBackend

    started = []

    class Recorded(LLM):
        def __init__(self, *args, **kwargs):
            started.append(self)
            super().__init__(*args, **kwargs)

    paths = [str(p) for p in write_family(tmp_path / "fam", ARCHITECTURES["llama-tied"])]
    add_redundant_head(paths)
    engine = {k: v for k, v in ENGINE.items() if k not in ("dtype", "seed")}
    with monkeypatch.context() as mp:
        mp.setattr(vllm, "LLM", Recorded)
        with pytest.raises(RuntimeError, match="no exact in-place swap") as refused:
            VLLMBackend(paths, EvalSettings(backend="vllm", dtype="float32", seed=0, engine_kwargs=engine))
    assert "lm_head.weight" in str(refused.value) and "\n" not in str(refused.value)
    # The engine core client's finalizer is what shutdown() detaches (vLLM 0.32 has no public flag).
    assert len(started) == 1 and not started[0].llm_engine.engine_core._finalizer.alive
    started.clear()
    gc.collect()

    a = ties(paths[0], paths[1], paths[2], 0.6, 0.4)
    fresh = LLM(model=str(merge_to_disk(a, tmp_path / "exported_a", progress=False)), **ENGINE)
    want = vllm_greedy(fresh)
    close_engine(fresh)
    untied = engine | {"hf_overrides": {"tie_word_embeddings": False}}
    backend = VLLMBackend(paths, EvalSettings(backend="vllm", dtype="float32", seed=0, engine_kwargs=untied))
    try:
        backend.load(a)
        assert_same_outputs(vllm_greedy(backend.llm), want, "re-tied llama, untied by hf_overrides")
    finally:
        llm = backend.llm
        backend.close()
        close_engine(llm)
