"""vLLM backend: one long-lived engine per worker; candidates are swapped into it in place.

The engine is started once from the reference checkpoint with
``worker_extension_cls="workers.scoring.vllm_extension.MergeExtension"``; its worker loads the
source models once, and every candidate is merged and reloaded inside the worker through
``llm.collective_rpc`` (see `vllm_extension`). Only public vLLM API is used: ``LLM``,
``collective_rpc``, ``reset_prefix_cache``, ``generate``, ``get_tokenizer``, ``model_config``.

After every swap the prefix cache is reset: its KV blocks were computed with the previous
candidate's weights and would otherwise be reused for prompts that share a prefix.

Where the source models live: ``EvalSettings.device == "cpu"`` keeps them in the worker's CPU
memory (merges run on the CPU, then ``reload_weights`` copies to the engine's device); any
other value (e.g. ``"cuda"``) keeps them on the engine's own device, so merges run there.
On a GPU, vLLM sizes its KV cache at start-up, before the sources are loaded: lower
``gpu_memory_utilization`` enough to leave room for them (roughly the sum of the source
checkpoints' sizes).

vLLM starts its engine in child processes (``spawn``, forced on CPU), so a script that builds
this backend needs the ``if __name__ == "__main__":`` guard. pytest's entry point and Ray's
worker processes have one.
"""

from __future__ import annotations

from search_spaces.errors import RecipeError
from search_spaces.recipe import Recipe, thaw
from workers.scoring.backend import LoadReport
from workers.scoring.result import EngineError
from workers.scoring.spec import EvalSettings

EXTENSION = "workers.scoring.vllm_extension.MergeExtension"


class VLLMBackend:
    name = "vllm"
    extension = EXTENSION  # the worker mix-in; `workers.data_flow_vllm` swaps in its own

    def __init__(self, model_paths: list[str], settings: EvalSettings, reference: str | None = None):
        from vllm import LLM

        from workers.scoring.vllm_lm import VLLMEvalLM

        self.settings = settings
        self.reference = reference or model_paths[0]
        model_paths = self._sources(list(model_paths))
        kwargs = thaw(settings.engine_kwargs)
        kwargs.setdefault("seed", settings.seed)
        if settings.dtype is not None:
            kwargs.setdefault("dtype", settings.dtype)
        if "worker_extension_cls" in kwargs:
            raise ValueError("engine_kwargs.worker_extension_cls is set by the vLLM backend itself")
        self.llm = LLM(model=self.reference, worker_extension_cls=self.extension, **kwargs)
        self._lm = None
        sources_on = "cpu" if settings.device == "cpu" else "engine"
        try:
            for reply in self.llm.collective_rpc("merge_init", args=(list(model_paths), self.reference, sources_on)):
                if not reply["ok"]:
                    raise RuntimeError(f"vLLM worker could not load the source models: {reply['error']}")
        except BaseException:
            # No caller will ever hold this backend: release the engine (its processes, its
            # memory and KV cache) now rather than whenever the garbage collector gets to it.
            self.close()
            raise
        self._lm = VLLMEvalLM(self.llm, batch_size=settings.batch_size, **thaw(settings.lm_kwargs))

    def _sources(self, model_paths: list[str]) -> list[str]:
        """The models the worker keeps resident: the reference is one of them."""
        return model_paths if self.reference in model_paths else [self.reference, *model_paths]

    @property
    def lm(self):
        return self._lm

    def load(self, recipe: Recipe) -> LoadReport:
        replies = self.llm.collective_rpc("merge_apply", args=(recipe.to_json(),))
        # Every weight may have changed: drop KV blocks cached for the previous candidate.
        self.llm.reset_prefix_cache()
        for reply in replies:
            if not reply["ok"]:
                if reply["kind"] == "oom":
                    raise MemoryError(f"out of memory while merging: {reply['error']}")
                if reply["kind"] == "engine_error":
                    raise EngineError(reply["error"])
                raise RecipeError(reply["error"])
        bad = sorted({name for reply in replies for name in reply["non_finite"]})
        return LoadReport(seconds=max(reply["seconds"] for reply in replies), non_finite=tuple(bad))

    def recover(self) -> None:
        # Nothing of a failed evaluation stays in the engine: requests finish or are aborted
        # by LLM.generate itself, and the next load() rewrites every weight.
        self.llm.reset_prefix_cache()

    def fatal(self, exc: BaseException) -> bool:
        # A dead engine core (e.g. after a CUDA OOM inside a forward pass) fails every later call.
        from vllm.v1.engine.exceptions import EngineDeadError

        return isinstance(exc, EngineError | EngineDeadError)

    def close(self) -> None:
        """Shut the engine down (idempotent): its core process, or in-process core, and memory."""
        llm, self.llm, self._lm = self.llm, None, None
        if llm is not None:
            shutdown_engine(llm)


def shutdown_engine(llm) -> None:
    """Stop an ``LLM``'s engine core now. ``LLM`` has no public close in vLLM 0.32; the engine
    core client's ``shutdown`` is what its finalizer runs at garbage collection (idempotent)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()
