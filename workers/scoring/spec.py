"""What to evaluate and how: plain, frozen, JSON-friendly settings (no torch, no lm-eval).

A `TaskSpec` names one lm-eval task, the metric that enters the fitness and its weight, the
split and how many documents. `EvalSettings` holds everything about the evaluation that is
the same for every task: the backend, where task YAMLs live, batch size, seeds, chat
template, and the keyword arguments passed untouched to the inference engine and to
generation. Nothing about an evaluation is hard-coded elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from search_spaces.errors import UserError
from search_spaces.recipe import DTYPES, FrozenDict, thaw

Split = Literal["validation", "test"]
Subsample = Literal["first", "random"]
BackendName = Literal["hf", "vllm"]


class ScoringConfigError(UserError):
    """Evaluation settings or a task spec that cannot be used as written."""


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task as a fitness term: ``weight * metric`` on ``split``.

    ``metric`` is the lm-eval metric name (``exact_match``, ``acc``, ``word_perplexity``...),
    optionally with its filter after a comma (``exact_match,strict-match``); without one, the
    task must report the metric under exactly one filter. A negative ``weight`` turns a
    lower-is-better metric (perplexity) into fitness.

    ``limit`` keeps that many documents (a fraction when below 1). ``subsample="first"``
    keeps the first ones, ``"random"`` a subset drawn with ``EvalSettings.seed``: either way
    the same documents for every candidate, so per-sample scores line up across candidates.
    """

    name: str
    metric: str = "exact_match"
    weight: float = 1.0
    split: Split = "validation"
    limit: int | float | None = None
    subsample: Subsample = "first"
    num_fewshot: int | None = None  # None: the task's own default (0 if it sets none)
    gen_kwargs: FrozenDict = field(default_factory=FrozenDict)  # over EvalSettings.gen_kwargs

    def __post_init__(self) -> None:
        where = f"tasks[{self.name or '?'}]"
        if not isinstance(self.name, str) or not self.name:
            raise ScoringConfigError(f"{where}.name: required, an lm-eval task name")
        if not isinstance(self.metric, str) or not self.metric or self.metric.count(",") > 1:
            raise ScoringConfigError(f"{where}.metric: a metric name, optionally 'metric,filter'")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or not math.isfinite(self.weight):
            raise ScoringConfigError(f"{where}.weight: must be a finite number")
        if self.split not in ("validation", "test"):
            raise ScoringConfigError(f"{where}.split: '{self.split}' is not 'validation' or 'test'")
        if self.limit is not None:
            ok = not isinstance(self.limit, bool) and isinstance(self.limit, int | float) and self.limit > 0
            if not ok or (isinstance(self.limit, float) and self.limit >= 1 and not self.limit.is_integer()):
                raise ScoringConfigError(f"{where}.limit: a document count >= 1 or a fraction in (0, 1)")
        if self.subsample not in ("first", "random"):
            raise ScoringConfigError(f"{where}.subsample: '{self.subsample}' is not 'first' or 'random'")
        if self.num_fewshot is not None and (isinstance(self.num_fewshot, bool) or not isinstance(self.num_fewshot, int)
                                             or self.num_fewshot < 0):
            raise ScoringConfigError(f"{where}.num_fewshot: a non-negative integer")
        if not isinstance(self.gen_kwargs, FrozenDict):
            if not isinstance(self.gen_kwargs, Mapping):
                raise ScoringConfigError(f"{where}.gen_kwargs: a mapping of generation arguments")
            object.__setattr__(self, "gen_kwargs", FrozenDict(self.gen_kwargs))

    @property
    def metric_name(self) -> str:
        return self.metric.split(",")[0]

    @property
    def metric_filter(self) -> str | None:
        parts = self.metric.split(",")
        return parts[1] if len(parts) == 2 else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gen_kwargs"] = thaw(self.gen_kwargs)
        return out

    @property
    def key(self) -> str:
        """Canonical JSON: what makes two evaluations of this task the same."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, where: str = "tasks[]") -> TaskSpec:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, Mapping):
            raise ScoringConfigError(f"{where}: a task name or a mapping with at least 'name'")
        return _build(cls, data, where)


@dataclass(frozen=True)
class EvalSettings:
    """How every task is evaluated; passed through to lm-eval and the inference engine.

    - ``engine_kwargs`` go to the inference engine: ``vllm.LLM(**engine_kwargs)`` for vLLM
      (``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``, ``tensor_parallel_size``,
      ``kv_cache_memory_bytes``...), ``AutoModelForCausalLM.from_pretrained`` for HF
      (``attn_implementation``...).
    - ``lm_kwargs`` go to the lm-eval model wrapper: ``HFLM`` for HF (``max_length``,
      ``add_bos_token``, ``truncation``...), `VLLMEvalLM` for vLLM (``max_length``,
      ``max_gen_toks``, ``add_bos_token``, ``prefix_token_id``).
    - ``gen_kwargs`` update every generate_until task's ``generation_kwargs`` (lm-eval's
      ``--gen_kwargs``); a TaskSpec's own ``gen_kwargs`` update them again.
    - ``seed`` seeds few-shot sampling, random subsamples and the engine.
    """

    backend: BackendName = "hf"
    include_path: tuple[str, ...] = ()
    include_defaults: bool = False  # also index lm-eval's ~10k bundled task YAMLs (slow)
    batch_size: int = 16
    seed: int = 1234
    device: str = "cpu"  # HF: the live model and sources; vLLM: the sources ("cpu" or the engine's)
    dtype: str | None = None  # live model dtype; None: the reference checkpoint's
    apply_chat_template: bool | str = False
    system_instruction: str | None = None
    fewshot_as_multiturn: bool = False
    bootstrap_iters: int = 0  # lm-eval stderr bootstraps; 0 skips them (fitness needs none)
    gen_kwargs: FrozenDict = field(default_factory=FrozenDict)
    engine_kwargs: FrozenDict = field(default_factory=FrozenDict)
    lm_kwargs: FrozenDict = field(default_factory=FrozenDict)
    cache_size: int = 100_000  # in-process results kept by recipe hash + task settings

    def __post_init__(self) -> None:
        if self.backend not in ("hf", "vllm"):
            raise ScoringConfigError(f"eval.backend: '{self.backend}' is not 'hf' or 'vllm'")
        if isinstance(self.include_path, str):
            object.__setattr__(self, "include_path", (self.include_path,))
        elif not isinstance(self.include_path, tuple):
            object.__setattr__(self, "include_path", tuple(str(p) for p in self.include_path))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ScoringConfigError("eval.batch_size: a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ScoringConfigError("eval.seed: a non-negative integer")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ScoringConfigError(f"eval.dtype: '{self.dtype}' is not one of {', '.join(DTYPES)}")
        for name in ("gen_kwargs", "engine_kwargs", "lm_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, FrozenDict):
                if not isinstance(value, Mapping):
                    raise ScoringConfigError(f"eval.{name}: a mapping of keyword arguments")
                object.__setattr__(self, name, FrozenDict(value))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("gen_kwargs", "engine_kwargs", "lm_kwargs"):
            out[name] = thaw(getattr(self, name))
        out["include_path"] = list(self.include_path)
        return out

    @property
    def key(self) -> str:
        """Canonical JSON of the settings that change results (not the cache size)."""
        data = self.to_dict()
        data.pop("cache_size")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, data: Any, where: str = "eval") -> EvalSettings:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ScoringConfigError(f"{where}: a mapping of evaluation settings")
        return _build(cls, data, where)


def _build(cls, data: Mapping[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ScoringConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(known))})")
    kwargs = dict(data)
    if "include_path" in kwargs and isinstance(kwargs["include_path"], list):
        kwargs["include_path"] = tuple(str(p) for p in kwargs["include_path"])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a missing 'name'
        raise ScoringConfigError(f"{where}: {exc}") from None
