"""lm-eval tasks prepared once per worker and run against any lm-eval `LM`.

Each `TaskSpec` gets its own lm-eval `Task` object, built once through the public
`TaskManager` and configured with the public `Task.set_config` (the way lm-eval's own
`simple_evaluate` applies ``num_fewshot`` and ``gen_kwargs``):

- **split:** lm-eval evaluates a task's ``test_split`` when it has one. To evaluate the
  validation split instead, ``test_split`` is pointed at the split named by the task's own
  ``validation_split``. The dataset already holds every split, so nothing is reloaded.
- **subsample:** ``limit`` becomes lm-eval's per-task ``samples`` (document indices), first
  or seeded-random, computed once, so every candidate sees the same documents.
- **few-shot:** the few-shot sampler is reseeded before every run, so every candidate sees
  the same prompts.

The dataset is read once per spec; each run only rebuilds the requests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from search_spaces.recipe import FrozenDict, thaw
from workers.scoring.result import TaskResult
from workers.scoring.spec import EvalSettings, ScoringConfigError, TaskSpec


class TaskRunner:
    """Loads, configures and caches lm-eval tasks for a fixed `EvalSettings`."""

    def __init__(self, settings: EvalSettings):
        self.settings = settings
        self._manager = None
        self._tasks: dict[str, Any] = {}  # TaskSpec.key -> configured lm-eval Task
        self._samples: dict[str, list[int] | None] = {}  # TaskSpec.key -> doc indices (None: all)
        self._metric_keys: dict[str, str] = {}  # TaskSpec.key -> "metric,filter"

    @property
    def manager(self):
        if self._manager is None:
            from lm_eval.tasks import TaskManager

            paths = [str(p) for p in self.settings.include_path] or None
            self._manager = TaskManager(include_path=paths, include_defaults=self.settings.include_defaults)
        return self._manager

    # -- preparation (config errors raise here, before any candidate is touched) -------------
    def prepare(self, specs: Sequence[TaskSpec]) -> None:
        for spec in specs:
            if spec.key not in self._tasks:
                self._load(spec)

    def _load(self, spec: TaskSpec) -> None:
        where = f"tasks[{spec.name}]"
        try:
            loaded = self.manager.load([spec.name])
        except KeyError:
            hint = "" if self.settings.include_path else " (no eval.include_path is set)"
            raise ScoringConfigError(f"{where}: no lm-eval task named '{spec.name}'{hint}") from None
        except Exception as exc:  # a YAML error, a dataset that is not available offline...
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ScoringConfigError(f"{where}: lm-eval could not load '{spec.name}': {type(exc).__name__}: {first}") from exc
        tasks = loaded["tasks"]
        if len(tasks) != 1 or loaded.get("groups"):
            raise ScoringConfigError(f"{where}: '{spec.name}' is a group or tag of {len(tasks)} tasks; "
                                     f"list them one by one ({', '.join(sorted(tasks)[:5])}...)")
        (task,) = tasks.values()
        config = task.config

        split_name = config.validation_split if spec.split == "validation" else config.test_split
        if split_name is None:
            raise ScoringConfigError(f"{where}.split: task '{spec.name}' defines no {spec.split} split "
                                     f"(validation_split: {config.validation_split}, test_split: {config.test_split})")
        splits = getattr(task, "dataset", None)
        if hasattr(splits, "keys") and split_name not in splits:
            raise ScoringConfigError(f"{where}.split: the dataset of '{spec.name}' has no split '{split_name}' "
                                     f"(it has {', '.join(splits)})")
        task.set_config(key="test_split", value=split_name)

        if spec.num_fewshot is not None:
            task.set_config(key="num_fewshot", value=spec.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)

        gen_kwargs = {**thaw(self.settings.gen_kwargs), **thaw(spec.gen_kwargs)}
        if gen_kwargs and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=gen_kwargs, update=True)

        self._metric_keys[spec.key] = _metric_key(task, spec, where)
        self._samples[spec.key] = _subsample(len(task.eval_docs), spec, self.settings.seed)
        self._tasks[spec.key] = task

    def task(self, spec: TaskSpec):
        """The configured lm-eval `Task` that evaluates ``spec`` (for inspection)."""
        self.prepare([spec])
        return self._tasks[spec.key]

    def documents(self, spec: TaskSpec) -> list[int] | None:
        """The evaluated document indices of ``spec`` (None: the whole split)."""
        self.prepare([spec])
        return self._samples[spec.key]

    # -- running -------------------------------------------------------------------------
    def run(self, lm, specs: Sequence[TaskSpec]) -> list[TaskResult]:
        """Evaluate ``specs`` with ``lm``; exceptions from the model or the tasks propagate."""
        self.prepare(specs)
        results: dict[str, TaskResult] = {}
        for batch in _unique_name_batches(specs):
            results.update(self._run_batch(lm, batch))
        return [results[spec.key] for spec in specs]

    def _run_batch(self, lm, specs: list[TaskSpec]) -> dict[str, TaskResult]:
        from lm_eval.evaluator import evaluate

        tasks, samples = {}, {}
        for spec in specs:
            task = self._tasks[spec.key]
            task.set_fewshot_seed(seed=self.settings.seed)
            tasks[spec.name] = task
            if self._samples[spec.key] is not None:
                samples[spec.name] = self._samples[spec.key]
        out = evaluate(
            lm=lm,
            task_dict={"tasks": tasks, "groups": {}, "group_map": {}},
            samples=samples or None,
            bootstrap_iters=self.settings.bootstrap_iters,
            log_samples=True,
            system_instruction=self.settings.system_instruction,
            apply_chat_template=self.settings.apply_chat_template,
            fewshot_as_multiturn=self.settings.fewshot_as_multiturn,
        )
        return {spec.key: self._task_result(spec, out) for spec in specs}

    def _task_result(self, spec: TaskSpec, out: dict) -> TaskResult:
        key = self._metric_keys[spec.key]
        metric, filter_name = key.split(",")
        reported = out["results"][spec.name]
        metrics = {k: float(v) for k, v in reported.items()
                   if "," in k and "_stderr" not in k and isinstance(v, int | float) and not isinstance(v, bool)}
        rows = sorted((s for s in out["samples"][spec.name] if s["filter"] == filter_name), key=lambda s: s["doc_id"])
        return TaskResult(
            name=spec.name,
            split=spec.split,
            metric=key,
            value=float(reported[key]),
            weight=float(spec.weight),
            metrics=FrozenDict(metrics),
            doc_ids=tuple(int(s["doc_id"]) for s in rows),
            samples=tuple(_sample_value(s[metric]) for s in rows),
        )


def _metric_key(task, spec: TaskSpec, where: str) -> str:
    metrics = list(task.aggregation())
    if spec.metric_name not in metrics:
        raise ScoringConfigError(f"{where}.metric: task '{spec.name}' reports no '{spec.metric_name}' "
                                 f"(it reports {', '.join(metrics)})")
    filters = [f["name"] for f in task.config.filter_list] if task.config.filter_list else ["none"]
    if spec.metric_filter is not None:
        if spec.metric_filter not in filters:
            raise ScoringConfigError(f"{where}.metric: task '{spec.name}' has no filter '{spec.metric_filter}' "
                                     f"(its filters: {', '.join(filters)})")
        return spec.metric
    if len(filters) != 1:
        raise ScoringConfigError(f"{where}.metric: task '{spec.name}' has filters {', '.join(filters)}; "
                                 f"write the metric as '{spec.metric_name},<filter>'")
    return f"{spec.metric_name},{filters[0]}"


def _subsample(n_docs: int, spec: TaskSpec, seed: int) -> list[int] | None:
    if spec.limit is None:
        return None
    k = math.ceil(n_docs * spec.limit) if spec.limit < 1 else min(int(spec.limit), n_docs)
    if k >= n_docs:
        return None
    if spec.subsample == "first":
        return list(range(k))
    # A string seed is hashed stably (sha512), unlike hash(); the same docs on every machine.
    rng = random.Random(f"{seed}:{spec.name}:{spec.split}")
    # lm-eval maps the i-th selected document to samples[i]: the list must be sorted.
    return sorted(rng.sample(range(n_docs), k))


def _sample_value(value: Any) -> float:
    """A per-sample metric as one float; (log-likelihood, units) pairs become a per-unit rate."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        loglikelihood, units = value
        return float(loglikelihood) / float(units) if units else float("nan")
    raise TypeError(f"per-sample metric value {value!r} is not a number or a (log-likelihood, count) pair")


def _unique_name_batches(specs: Sequence[TaskSpec]) -> list[list[TaskSpec]]:
    """Split ``specs`` into runs in which every task name appears once (lm-eval keys by name)."""
    batches: list[list[TaskSpec]] = []
    for spec in specs:
        for batch in batches:
            if all(s.name != spec.name for s in batch):
                batch.append(spec)
                break
        else:
            batches.append([spec])
    return batches
