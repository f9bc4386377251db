"""The run configuration: validated once, here, at the edge; plain data everywhere else.

Errors name the field and the line of the YAML file it came from, e.g.
``search.yaml:14: strategy.name: unknown strategy 'cmaa' (did you mean 'cma'?)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search_spaces.errors import UserError
from search_spaces.recipe import DTYPES

Dtype = Literal[DTYPES]  # type: ignore[valid-type]


class ConfigError(UserError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(_Strict):
    base: str = Field(description="base model directory, or zoo:NAME for the embedded zoo")
    sources: list[str] = Field(min_length=1, description="models whose deltas are merged")


class SpaceConfig(_Strict):
    """Parameter space: which per-model parameters are searched, per layer group and tensor kind."""

    merge_method: str = "task_arithmetic"
    layer_groups: int = Field(default=1, ge=1, le=256)
    kinds: list[str] = Field(default_factory=list)
    search: dict[str, tuple[float, float]] = Field(default_factory=lambda: {"weight": (0.0, 1.0)})
    parameters: dict[str, Any] = Field(default_factory=dict, description="fixed global merge parameters")
    model_parameters: dict[str, Any] = Field(default_factory=dict, description="fixed per-model parameters")
    dtype: Dtype | None = None

    @field_validator("search")
    @classmethod
    def _bounds(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        if not value:
            raise ValueError("at least one parameter must be searched")
        for name, (lo, hi) in value.items():
            if not lo < hi:
                raise ValueError(f"{name}: lower bound {lo} must be below upper bound {hi}")
        return value  # each method's valid ranges: search_spaces.methods, checked by the search space


class DataFlowConfig(_Strict):
    """Data-flow search (`search_spaces.data_flow`): model A is ``models.base``, B the one source.

    Its presence makes the run a layer-path search; ``space`` (the parameter space) is then unused.
    """

    repeats: int = Field(default=3, ge=1, le=16, description="r: the slot layout is both models' layers, r times")
    scales: Literal["full", "per_slot", "none"] = "per_slot"
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_path_length: int | None = Field(default=None, ge=1, description="default: twice a model's depth")
    fix_ends: bool = Field(default=True, description="A's first and last layers start and end the path")
    slot_order: Literal["sequential", "interleaved"] = "sequential"
    max_cumulative_scale: float = Field(default=16.0, gt=1)


class StrategyConfig(_Strict):
    name: str = "cma"
    seed: int = Field(default=0, ge=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    seeds: Literal["auto", "none"] | list[dict[str, Any]] = Field(
        default="auto", description="initial genomes, asked first: auto (source models, uniform merges, each model left out; "
        "evolve.seeds), none, or a list of recipes")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_shape(cls, value: Any) -> Any:
        """One plain message for a wrong kind of value, not one per member of the union."""
        if value in ("auto", "none") or (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return value
        raise ValueError(f"must be auto, none or a list of recipes (mappings), got {value!r}")


class BudgetConfig(_Strict):
    """When the search stops asking for candidates: the first limit reached, of those given.

    ``max_samples`` counts documents scored (each evaluation's ``samples_scored``) by every
    evaluation of the run: the source models', low and full ones; a failed evaluation records
    none, so it counts 0. Work in flight counts for what it will score, so the run ends within
    the limit; what is in flight when a limit is reached finishes and is recorded.
    """

    max_evaluations: int | None = Field(default=None, ge=1, description="candidates told")
    max_minutes: float | None = Field(default=None, gt=0)
    max_samples: int | None = Field(default=None, ge=1, description="documents scored, every evaluation counted")

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if self.max_evaluations is None and self.max_minutes is None and self.max_samples is None:
            raise ValueError("give max_evaluations, max_minutes and/or max_samples")
        return self


class FailFastConfig(_Strict):
    """When a run gives up on its own instead of spending its budget on a broken setup.

    A run stops with status FAILED when its first ``first`` evaluations all fail, or when more
    than ``max_failure_rate`` of the last ``window`` evaluations failed. Evaluations count
    once their retries are spent; the source models scored beside the search count too.
    """

    first: int = Field(default=5, ge=0, description="0 turns the first-evaluations rule off")
    window: int = Field(default=20, ge=1)
    max_failure_rate: float = Field(default=0.9, gt=0, le=1, description="1 turns the window rule off")


class FidelityConfig(_Strict):
    """Multi-fidelity fitness: asynchronous successive halving (ASHA, arXiv 1810.05934) over two rungs.

    Every search candidate is scored first at low fidelity: each validation task on the same
    ``low_limit`` documents for every candidate, a random subsample drawn with
    ``evaluation.seed`` (not a prefix, so it is a fair sample whatever the data order). A low
    result within the top ``promote_fraction`` of the run's low results so far, or above the
    best full result so far (the source models' included) by more than the promoted low
    results proved optimistic on average (`evolve.loop.promotes`), is promoted: the same
    candidate is scored again on the full tasks, a second evaluation row. Only full results
    rank on leaderboards and exports.
    """

    low_limit: int = Field(ge=1, description="documents per validation task at low fidelity")
    promote_fraction: float = Field(default=0.25, gt=0, le=1,
                                    description="promote when in this top fraction of the low results so far")


class TaskConfig(_Strict):
    name: str
    metric: str = "exact_match"
    weight: float = 1.0
    split: Literal["validation", "test"] = "validation"
    limit: int | None = Field(default=None, ge=1)
    subsample: Literal["first", "random"] = "first"
    num_fewshot: int | None = Field(default=None, ge=0)


class EvaluationConfig(_Strict):
    """Passed through to `workers.scoring.EvalSettings` (lm-eval and the inference engine).

    ``backend: analytic`` scores recipes with a model-free objective (`workers.analytic_scorer`,
    its arguments in ``engine_kwargs``): for checking a cluster's plumbing in seconds.
    """

    backend: Literal["hf", "vllm", "analytic"] = "hf"
    include_path: list[str] | None = Field(
        default=None, description="folders of lm-eval task YAMLs (default: the zoo's, when the models are zoo: models)")
    include_defaults: bool = Field(default=False, description="also index lm-eval's bundled tasks (slow)")
    batch_size: int = Field(default=32, ge=1)
    seed: int = Field(default=1234, ge=0)
    device: str = "cpu"
    dtype: Dtype | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vllm.LLM / from_pretrained arguments")
    lm_kwargs: dict[str, Any] = Field(default_factory=dict, description="lm-eval model wrapper arguments")
    gen_kwargs: dict[str, Any] = Field(default_factory=dict)
    apply_chat_template: bool = False
    report_test: bool = Field(default=True, description="also score each candidate on the test split")

    @field_validator("include_path", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ResourcesConfig(_Strict):
    address: str | None = None
    workers: int = Field(default=1, ge=1)
    gpus_per_worker: float = Field(default=0, ge=0)
    cpus_per_worker: float = Field(default=1, gt=0)
    max_retries: int = Field(default=2, ge=0)


class RunConfig(_Strict):
    name: str = "search"
    models: ModelsConfig
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    budget: BudgetConfig
    tasks: list[TaskConfig] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    fail_fast: FailFastConfig = Field(default_factory=FailFastConfig)
    store: str | None = None
    data_flow: DataFlowConfig | None = None
    fidelity: FidelityConfig | None = None

    @model_validator(mode="after")
    def _data_flow_pair(self) -> RunConfig:
        if self.data_flow is not None and len(self.models.sources) != 1:
            raise ValueError("data_flow: searches layer paths over two models: models.base (A) and exactly "
                             f"one entry in models.sources (B), got {len(self.models.sources)} sources")
        return self


def resolve_store_url(cli_value: str | None, config: RunConfig | None = None) -> str:
    """--store beats EVOLVE_STORE beats the config's `store` beats the store's default."""
    from evolve.store import ENV_VAR, default_store_url

    if cli_value or os.environ.get(ENV_VAR) or config is None or config.store is None:
        return cli_value or default_store_url()
    return config.store


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        raise ConfigError(f"{_where(path, root, err['loc'])}: {message}") from None


def field_error(source: str | Path | None, loc: tuple, message: str) -> ConfigError:
    """A one-line error about config field ``loc`` (e.g. ``("space", "merge_method")``),
    prefixed with ``file:line`` when the config came from a file."""
    if source is None:
        return ConfigError(f"{'.'.join(str(p) for p in loc)}: {message}")
    path = Path(source)
    try:
        root = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        root = None
    return ConfigError(f"{_where(path, root, loc)}: {message}")


def _where(path: Path, root: yaml.Node | None, loc: tuple) -> str:
    line = _line_of(root, loc)
    field = ".".join(str(p) for p in loc) or "(top level)"
    return f"{path}:{line}: {field}" if line else f"{path}: {field}"


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the deepest YAML node on ``loc`` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line
