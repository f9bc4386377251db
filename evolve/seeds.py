"""Initial genomes for a search: the config's ``strategy.seeds`` resolved against the space.

``auto`` (the default) gives, in this order, whichever of these the space can encode, each
clipped into the searched bounds and deduplicated (the first of equal genomes is kept):

1. each source model as it is (``parent:NAME``): weight 1 on that model and 0 on the others,
   density 1, lambda 1 (and neutral values for other parameters, `NEUTRAL`); for task
   arithmetic that reproduces base + its task vector exactly;
2. ``uniform:1/N``: every weight 1/N, density 1. This is also TIES at density 1 normalised and
   mergekit-evolve's x0 (equal weights 1/N, density 1, normalised): ``normalize`` is a fixed
   parameter, not a genome coordinate, so they are one genome;
3. ``uniform:1``: every weight 1, density 1 (task arithmetic at full strength); left out when
   the merge divides the weights by their sum (``normalize``, set or the method's default),
   since it is then the same merge as ``uniform:1/N`` and would spend an evaluation on nothing;
4. with three or more models, ``without:NAME`` for each model: weight 0 on that model and 1 on
   the others, density 1 (under ``normalize``, the others' uniform merge). It is the ablation a
   user runs to find a model that hurts the merge; N more evaluations, where a model that
   drags every merge down is otherwise a corner (its weight exactly 0 in every block) that
   Gaussian steps from a uniform merge do not reach (`benchmarks/README.md` §3.5);
5. where the space splits tensor kinds (``space.kinds``), ``without:NAME[KIND]`` for each model
   and kind slot (``*`` = the other tensors): that model's weight 0 on that kind, every other
   weight 1, density 1. The same ablation one tensor kind at a time: it finds a model whose
   embeddings (say) hurt a merge its blocks help, which no global merge can express and which
   is, for CMA-ES, a corner of the box in one kind's coordinates (on the zoo's kind pair every
   global seed scores at most 1/64, the adder's embeddings left out 0.25; `benchmarks/README.md`
   §3.9). N x (kinds + 1) more evaluations, so they are left out where the seeds would then
   take more than `SEED_SHARE` of ``budget.max_evaluations`` (the other families never are).

``none`` gives no seeds; a list of recipes (mappings, as in a recipe file) gives those, each
encoded by the space (a recipe the space cannot represent is refused, naming its index).

A data-flow space brings its own: ``auto`` is its ``naive_paths()``, each parent (the first,
model A, is the paper's start) and the two stacks A+B and B+A, as far as the path bound
allows; recipes go through its ``encode``.

Seeds are plain data computed from the config alone, so a resumed run gets the same seeds
and replay reproduces the same asks. Torch-free, but for a method's ``normalize`` default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from search_spaces.errors import RecipeError, UserError
from search_spaces.parameter_space import DEFAULT_KIND_LABEL, ParameterSpace
from search_spaces.recipe import Recipe

NEUTRAL: dict[str, float] = {
    "density": 1.0,       # keep every delta entry
    "lambda": 1.0,        # task vectors at full scale
    "scale": 1.0,         # passthrough
    "t": 1.0,             # slerp/nearswap: the merged model's end
    "select_topk": 1.0,   # sce: keep everything
    "gamma": 0.0,         # breadcrumbs: remove no outliers
    "epsilon": 0.0,       # della: no spread of keep probabilities
    "drop_ratio": 0.0,    # pcb: drop nothing
}
"""Values of non-weight parameters under which a one-model merge stays that model (where it can)."""

SEED_SHARE = 0.25
"""The most of a run's evaluation budget that the optional per-kind seeds may bring the seeds to:
CMA-ES proposes nothing until every seed is told, so seeds must leave the search its budget."""

_Weight = Callable[[str, "str | None"], float]
"""A seed's weight for (model, tensor kind slot); the slot is None for the other tensors."""


@dataclass(frozen=True)
class Seed:
    """One initial genome and where it came from (``parent:NAME``, ``uniform:1/N``, ``without:NAME``,
    ``without:NAME[KIND]``, ``recipe[i]``)."""

    label: str
    genome: tuple[float, ...]


def resolve_seeds(space: Any, spec: str | Sequence[Mapping[str, Any]] | None,
                  budget: int | None = None) -> tuple[Seed, ...]:
    """The seeds ``strategy.seeds`` asks for: ``"auto"``, ``"none"``/None or a list of recipes.
    ``budget``: the run's ``max_evaluations`` (None: unbounded), which caps the optional seeds."""
    if spec is None or spec == "none":
        return ()
    if spec == "auto":
        if isinstance(space, ParameterSpace):
            return auto_seeds(space, budget)
        if hasattr(space, "naive_paths"):  # a data-flow space
            return _path_seeds(space)
        start = getattr(space, "start_genome", None)  # any other space: its own start, if it has one
        return () if start is None else (Seed("start", tuple(float(v) for v in start())),)
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise UserError(f"strategy.seeds: must be auto, none or a list of recipes, got {spec!r}")
    out = []
    for i, data in enumerate(spec):
        where = f"strategy.seeds[{i}]"
        try:
            genome = space.encode(Recipe.from_dict(data, source=where))
        except RecipeError as exc:
            raise UserError(f"{where}: the space cannot encode this recipe: {exc}") from None
        out.append(Seed(f"recipe[{i}]", tuple(float(v) for v in genome)))
    return tuple(out)


def seed_genomes(space: Any, spec: str | Sequence[Mapping[str, Any]] | None,
                 budget: int | None = None) -> tuple[tuple[float, ...], ...]:
    """Just the genomes of `resolve_seeds`, in order: what `make_strategy(seeds=...)` takes."""
    return tuple(s.genome for s in resolve_seeds(space, spec, budget))


def auto_seeds(space: ParameterSpace, budget: int | None = None) -> tuple[Seed, ...]:
    """The source models, uniform merges at 1/N and 1, then each model left out, in all and one
    tensor kind at a time (see the module docstring)."""
    models, n = space.models, len(space.models)
    wanted: list[tuple[str, _Weight]] = [
        (f"parent:{_name(m)}", lambda model, kind, m=m: float(model == m)) for m in models
    ]
    wanted.append((f"uniform:1/{n}", lambda model, kind: 1.0 / n))
    if not normalizes_weights(space):
        wanted.append(("uniform:1", lambda model, kind: 1.0))
    if n >= 3:
        wanted += [(f"without:{_name(m)}", lambda model, kind, m=m: float(model != m)) for m in models]
    per_kind = [(m, k) for m in models for k in space.kind_slots] if space.kinds else []
    if budget is None or len(wanted) + len(per_kind) <= SEED_SHARE * budget:
        wanted += [(f"without:{_name(m)}[{DEFAULT_KIND_LABEL if k is None else k}]",
                    lambda model, kind, m=m, k=k: float(model != m or kind != k))
                   for m, k in per_kind]
    out: list[Seed] = []
    seen: set[tuple[float, ...]] = set()
    for label, weight in wanted:
        genome = _genome(space, weight)
        if genome not in seen:
            seen.add(genome)
            out.append(Seed(label, genome))
    return tuple(out)


def _name(model: str) -> str:
    return PurePath(model).name or model


def normalizes_weights(space: ParameterSpace) -> bool:
    """Whether the merge divides the weights by their sum: ``normalize`` as set, else the method's
    default (the worker registry is its one source; imported here only, it loads torch)."""
    if "normalize" in space.parameters:
        return bool(space.parameters["normalize"])
    from workers.merge_methods.registry import METHODS

    spec = METHODS[space.merge_method].param("normalize")
    return bool(spec is not None and spec.default)


def _path_seeds(space: Any) -> tuple[Seed, ...]:
    """A data-flow space's naive paths (`DataFlowSpace.naive_paths`), deduplicated; the first,
    parent A, is the paper's start, the centre of the box."""
    out: list[Seed] = []
    seen: set[tuple[float, ...]] = set()
    for label, path in space.naive_paths():
        genome = tuple(float(v) for v in space.encode(path))
        if genome not in seen:
            seen.add(genome)
            out.append(Seed(label, genome))
    return tuple(out)


def _genome(space: ParameterSpace, weight: _Weight) -> tuple[float, ...]:
    """Per coordinate: ``weight(model, kind)``, or a neutral value, clipped into bounds, then encoded."""
    values = []
    for c in space.coordinates:
        if c.parameter == "weight" and c.model:
            v = weight(c.model, c.kind)
        else:
            v = NEUTRAL.get(c.parameter, (c.lower + c.upper) / 2.0)
        values.append(min(max(v, c.lower), c.upper))
    lower = np.array([c.lower for c in space.coordinates])
    upper = np.array([c.upper for c in space.coordinates])
    x = np.clip((np.array(values) - lower) / (upper - lower), 0.0, 1.0)
    return tuple(float(v) for v in space.encode(space.decode(x)))  # the space's exact genome for that recipe
