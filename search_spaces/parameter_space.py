"""The parameter-space genome codec: a vector in [0, 1]^d to and from a merge `Recipe`.

A `ParameterSpace` names one merge family to search (method, base, source models) and the
per-model parameters searched inside it, each with its own bounds. Strategies only ever see
standardized genomes in the unit box, nevergrad-style; the space owns the bounds and maps
coordinate ``x`` to ``lower + x * (upper - lower)``.

    space = ParameterSpace.from_dict({
        "merge_method": "dare_ties",
        "base_model": "zoo/base",
        "models": ["zoo/arith", "zoo/cipher"],
        "layer_groups": 4,                 # one value per group of layers (1: one per model)
        "kinds": ["self_attn", "mlp"],     # a value per tensor kind, plus one for the rest
        "search": {"weight": [0, 1], "density": [0.1, 1.0]},
        "parameters": {"lambda": 1.0, "normalize": True},  # fixed, global
        "model_parameters": {},                            # fixed, same for every model
    })
    recipe = space.decode(x)   # x: shape (space.dimension,), every coordinate in [0, 1]
    x2 = space.encode(recipe)  # space.decode(x2) == recipe

Which parameters can be searched, and inside which bounds, comes from the method's entry in
`search_spaces.methods.RULES` (the table the kernel registry also checks itself against):
float parameters only, bounds inside the parameter's valid range. A per-model parameter gets a
coordinate per model; a global one (``lambda``, sce's ``select_topk``) one shared by all models.

Genome layout. Coordinates are ordered layer group first, then tensor kind (the listed kinds,
then the default for other tensors); within each (group, kind) block come the per-model
coordinates, model first, then parameter, and after them the global ones (parameters sorted
by name, so the layout never depends on the key order of a serialised mapping):
``index = (group * n_kinds + kind) * block + model * n_params + param`` with
``block = n_models * n_params + n_globals``, the globals at ``n_models * n_params + q``. Early
layers therefore come first, so a crossover split point (M2N2) separates early from late ones.

Decoded values take the forms of `search_spaces.values`: a scalar when there is one group and
no kind split, ``{groups: [...]}`` for several groups, and a filter list
``[{filter: self_attn, value: ...}, {filter: mlp, value: ...}, {value: ...}]`` for kinds.

Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePath
from typing import Any

import numpy as np

from search_spaces.errors import InvalidGenomeError, RecipeError, UserError
from search_spaces.methods import RULES, MethodRules
from search_spaces.recipe import DTYPES, FrozenDict, Recipe, thaw
from search_spaces.values import check_value

DEFAULT_KIND_LABEL = "*"
"""How `describe` and `Coordinate.label` name the default slot (tensors matching no kind)."""

_KEYS = (
    "merge_method", "base_model", "models", "layer_groups", "kinds", "search", "parameters",
    "model_parameters", "dtype", "seed",
)


@dataclass(frozen=True)
class SearchedParameter:
    """One parameter under search, with the interval its genome coordinates span.

    ``scope`` comes from the method's rules when the space is validated.
    """

    name: str
    lower: float
    upper: float
    scope: str = "per_model"

    @property
    def width(self) -> float:
        return self.upper - self.lower


@dataclass(frozen=True)
class Coordinate:
    """What one genome coordinate controls, for dashboards and `describe`."""

    index: int
    model: str            # model path, as in the recipe; "" for a global parameter
    parameter: str
    kind: str | None      # a tensor-kind filter, or None for the default (other tensors)
    group: int            # layer group, 0 when the space has one group
    lower: float
    upper: float
    label: str            # e.g. "arith.weight[self_attn][g2]"


@dataclass(frozen=True)
class ParameterSpace:
    """A frozen description of one merge family and the genome that spans it.

    Construct directly or with `from_dict`; both validate and raise `UserError` naming the
    field at fault.
    """

    merge_method: str
    models: tuple[str, ...]
    search: tuple[SearchedParameter, ...]
    base_model: str | None = None  # merged only by a method that uses a base (see `recipe_base`)
    layer_groups: int = 1
    kinds: tuple[str, ...] = ()
    parameters: FrozenDict = field(default_factory=FrozenDict)
    model_parameters: FrozenDict = field(default_factory=FrozenDict)
    dtype: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        fields = _validated(
            "search_space",
            merge_method=self.merge_method, models=self.models, search=self.search,
            base_model=self.base_model, layer_groups=self.layer_groups, kinds=self.kinds,
            parameters=self.parameters, model_parameters=self.model_parameters,
            dtype=self.dtype, seed=self.seed,
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "search_space") -> ParameterSpace:
        """Validate plain data (YAML/JSON) into a space; errors name ``source.field``."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: must be a mapping with merge_method, models and search")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise UserError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(_KEYS)})")
        raw_search = data.get("search")
        if not isinstance(raw_search, Mapping) or not raw_search:
            raise UserError(
                f"{source}.search: required, a mapping of parameter name to [lower, upper], "
                "e.g. {weight: [0, 1], density: [0.1, 1.0]}"
            )
        search = []
        for name, bounds in raw_search.items():
            where = f"{source}.search.{name}"
            if isinstance(bounds, Mapping):
                if set(bounds) != {"lower", "upper"}:
                    raise UserError(f"{where}: give [lower, upper] or {{lower: ..., upper: ...}}")
                bounds = [bounds["lower"], bounds["upper"]]
            if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
                raise UserError(f"{where}: bounds must be [lower, upper], got {bounds!r}")
            search.append(SearchedParameter(str(name), *bounds))
        fields = _validated(
            source,
            merge_method=data.get("merge_method"),
            models=data.get("models"),
            search=tuple(search),
            base_model=data.get("base_model"),
            layer_groups=data.get("layer_groups", 1),
            kinds=data.get("kinds", ()) or (),
            parameters=data.get("parameters") or {},
            model_parameters=data.get("model_parameters") or {},
            dtype=data.get("dtype"),
            seed=data.get("seed", 0),
        )
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; `from_dict(space.to_dict()) == space`."""
        out: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model is not None:
            out["base_model"] = self.base_model
        out["models"] = list(self.models)
        out["layer_groups"] = self.layer_groups
        if self.kinds:
            out["kinds"] = list(self.kinds)
        out["search"] = {p.name: [p.lower, p.upper] for p in self.search}
        if self.parameters:
            out["parameters"] = thaw(self.parameters)
        if self.model_parameters:
            out["model_parameters"] = thaw(self.model_parameters)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        out["seed"] = self.seed
        return out

    # -- layout -----------------------------------------------------------------------------
    @property
    def kind_slots(self) -> tuple[str | None, ...]:
        """The tensor-kind slots: each kind filter, then None for the default (other tensors)."""
        return (*self.kinds, None) if self.kinds else (None,)

    @property
    def per_model_search(self) -> tuple[SearchedParameter, ...]:
        return tuple(p for p in self.search if p.scope == "per_model")

    @property
    def global_search(self) -> tuple[SearchedParameter, ...]:
        return tuple(p for p in self.search if p.scope == "global")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(layer groups, kind slots, models, per-model searched parameters): that part of the genome."""
        return (self.layer_groups, len(self.kind_slots), len(self.models), len(self.per_model_search))

    @property
    def _block(self) -> int:
        """Coordinates per (group, kind): the per-model ones, then the globals."""
        return len(self.models) * len(self.per_model_search) + len(self.global_search)

    @property
    def dimension(self) -> int:
        return self.layer_groups * len(self.kind_slots) * self._block

    @cached_property
    def coordinates(self) -> tuple[Coordinate, ...]:
        names = _short_names(self.models)
        out = []
        for g in range(self.layer_groups):
            for kind in self.kind_slots:
                suffix = f"[{DEFAULT_KIND_LABEL if kind is None else kind}]" if self.kinds else ""
                suffix += f"[g{g}]" if self.layer_groups > 1 else ""
                for model, short in zip(self.models, names):
                    for p in self.per_model_search:
                        out.append(Coordinate(len(out), model, p.name, kind, g, p.lower, p.upper,
                                              f"{short}.{p.name}{suffix}"))
                for p in self.global_search:
                    out.append(Coordinate(len(out), "", p.name, kind, g, p.lower, p.upper, f"{p.name}{suffix}"))
        return tuple(out)

    def _split(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Genome-ordered values -> (G, K, M, P) per-model and (G, K, Q) global grids."""
        blocks = values.reshape(self.layer_groups, len(self.kind_slots), self._block)
        n = len(self.models) * len(self.per_model_search)
        return blocks[..., :n].reshape(self.shape), blocks[..., n:]

    @cached_property
    def _lower(self) -> np.ndarray:
        return np.array([c.lower for c in self.coordinates], dtype=np.float64)

    @cached_property
    def _upper(self) -> np.ndarray:
        return np.array([c.upper for c in self.coordinates], dtype=np.float64)

    @property
    def recipe_base(self) -> str | None:
        """The ``base_model`` of the recipes this space decodes: none for a method that merges no
        base (linear, passthrough, karcher), whose space keeps the run's base only as its
        reference model (architecture, tokenizer, a parent scored beside the search). Merged,
        it would need a weight the space does not search; a user who wants it in the merge
        lists it among the models."""
        return None if RULES[self.merge_method].base == "unused" else self.base_model

    # -- codec ------------------------------------------------------------------------------
    def values(self, x: Any) -> np.ndarray:
        """The parameter value of each coordinate of genome ``x`` (validated), in genome order."""
        return self._to_values(self._check_genome(x))

    def decode(self, x: Any) -> Recipe:
        """The recipe for genome ``x``; raises `InvalidGenomeError`, never returns None."""
        grid, global_grid = self._split(self.values(x))
        models = []
        for m, path in enumerate(self.models):
            params: dict[str, Any] = thaw(self.model_parameters)
            for p, sp in enumerate(self.per_model_search):
                params[sp.name] = self._value_form(grid[:, :, m, p])
            models.append({"model": path, "parameters": params})
        data: dict[str, Any] = {"merge_method": self.merge_method, "models": models, "seed": self.seed}
        if self.recipe_base is not None:
            data["base_model"] = self.recipe_base
        global_params = thaw(self.parameters)
        for q, sp in enumerate(self.global_search):
            global_params[sp.name] = self._value_form(global_grid[:, :, q])
        if global_params:
            data["parameters"] = global_params
        if self.dtype is not None:
            data["dtype"] = self.dtype
        try:
            return Recipe.from_dict(data, source="decoded genome")
        except RecipeError as exc:  # the space validated its bounds, so this is a bug
            raise InvalidGenomeError(f"genome decodes to an invalid recipe: {exc}") from exc

    def encode(self, recipe: Recipe) -> np.ndarray:
        """The genome of ``recipe``: the inverse of `decode`.

        ``decode(encode(r)) == r`` for every recipe ``r`` that `decode` produced, and
        ``encode(decode(x))`` equals ``x`` up to a few ulps. Hand-written recipes of the same
        family encode too: a scalar is broadcast over groups and kinds. ``dtype`` and ``seed``
        are not part of the genome and are ignored. Raises `RecipeError` naming the field
        that the space cannot represent.
        """
        where = "recipe"
        if recipe.merge_method != self.merge_method:
            raise RecipeError(
                f"{where}.merge_method: '{recipe.merge_method}', but the space searches '{self.merge_method}'"
            )
        if recipe.slices or not recipe.models:
            raise RecipeError(f"{where}: a parameter-space recipe lists 'models', not 'slices'")
        if recipe.base_model != self.recipe_base:
            raise RecipeError(f"{where}.base_model: '{recipe.base_model}', but the space uses '{self.recipe_base}'")
        paths = tuple(e.model for e in recipe.models)
        if paths != self.models:
            raise RecipeError(
                f"{where}.models: {list(paths)}, but the space merges {list(self.models)} (in that order)"
            )
        searched_globals = {p.name for p in self.global_search}
        fixed_globals = {k: v for k, v in thaw(recipe.parameters).items() if k not in searched_globals}
        if fixed_globals != thaw(self.parameters):
            raise RecipeError(
                f"{where}.parameters: {fixed_globals} differ from the space's fixed {thaw(self.parameters)}"
            )
        grid = np.empty(self.shape, dtype=np.float64)
        searched = {p.name for p in self.per_model_search}
        for m, entry in enumerate(recipe.models):
            at = f"{where}.models[{m}].parameters"
            fixed = {k: v for k, v in thaw(entry.parameters).items() if k not in searched}
            if fixed != thaw(self.model_parameters):
                raise RecipeError(
                    f"{at}: fixed parameters {fixed} differ from the space's {thaw(self.model_parameters)}"
                )
            for p, sp in enumerate(self.per_model_search):
                if sp.name not in entry.parameters:
                    raise RecipeError(f"{at}.{sp.name}: missing (the space searches it)")
                grid[:, :, m, p] = self._value_grid(thaw(entry.parameters[sp.name]), f"{at}.{sp.name}", sp)
        global_grid = np.empty((self.layer_groups, len(self.kind_slots), len(self.global_search)))
        for q, sp in enumerate(self.global_search):
            if sp.name not in recipe.parameters:
                raise RecipeError(f"{where}.parameters.{sp.name}: missing (the space searches it)")
            global_grid[:, :, q] = self._value_grid(thaw(recipe.parameters[sp.name]), f"{where}.parameters.{sp.name}", sp)
        n_kinds = len(self.kind_slots)
        values = np.concatenate([grid.reshape(self.layer_groups, n_kinds, -1), global_grid], axis=2).reshape(-1)
        width = self._upper - self._lower
        x = np.clip((values - self._lower) / width, 0.0, 1.0)
        # Nudge each coordinate by ulps until it decodes to exactly the recorded value, so
        # that decode(encode(r)) == r bit for bit (and recipe hashes match).
        for _ in range(8):
            back = self._to_values(x)
            low, high = back < values, back > values
            if not (low.any() or high.any()):
                break
            x = np.where(low, np.nextafter(x, 2.0), np.where(high, np.nextafter(x, -1.0), x))
            x = np.clip(x, 0.0, 1.0)
        return x

    def describe(self, x: Any) -> dict[str, float]:
        """A readable mapping of each coordinate's label to its decoded value, in genome order."""
        values = self.values(x)
        return {c.label: float(v) for c, v in zip(self.coordinates, values)}

    # -- helpers ----------------------------------------------------------------------------
    def _check_genome(self, x: Any) -> np.ndarray:
        return check_genome(x, self.dimension, [c.label for c in self.coordinates])

    def _to_values(self, x: np.ndarray) -> np.ndarray:
        # Clipping keeps the endpoints exact (x = 1 gives upper even when lower + width rounds up).
        return np.clip(self._lower + x * (self._upper - self._lower), self._lower, self._upper)

    def _value_form(self, grid: np.ndarray) -> Any:
        """(groups, kind slots) values of one model's parameter -> a recipe value."""

        def per_groups(column: np.ndarray) -> Any:
            if self.layer_groups == 1:
                return float(column[0])
            return {"groups": [float(v) for v in column]}

        if not self.kinds:
            return per_groups(grid[:, 0])
        entries: list[dict[str, Any]] = []
        for s, kind in enumerate(self.kind_slots):
            entry: dict[str, Any] = {"value": per_groups(grid[:, s])}
            if kind is not None:
                entry = {"filter": kind, **entry}
            entries.append(entry)
        return entries

    def _value_grid(self, value: Any, where: str, sp: SearchedParameter) -> np.ndarray:
        """A recipe value -> its (groups, kind slots) array, checked against the space."""
        n_groups, n_slots = self.layer_groups, len(self.kind_slots)

        def groups_of(v: Any, at: str) -> np.ndarray:
            if _is_number(v):
                column = np.full(n_groups, float(v))
            elif isinstance(v, Mapping) and "groups" in v:
                if len(v["groups"]) != n_groups:
                    raise RecipeError(f"{at}.groups: {len(v['groups'])} groups, but the space has {n_groups}")
                column = np.array([float(g) for g in v["groups"]])
            else:
                raise RecipeError(f"{at}: {v!r} cannot be encoded (expected a number or {{groups: [...]}})")
            outside = (column < sp.lower) | (column > sp.upper)
            if outside.any():
                bad = column[outside][0]
                raise RecipeError(f"{at}: {bad} is outside the searched range [{sp.lower}, {sp.upper}]")
            return column

        grid = np.empty((n_groups, n_slots))
        if isinstance(value, list) and value and all(isinstance(e, Mapping) for e in value):
            if not self.kinds:
                raise RecipeError(f"{where}: per-kind filters, but the space has no kind split")
            by_filter: dict[str | None, Any] = {}
            for i, entry in enumerate(value):
                flt = entry.get("filter")
                if flt not in self.kind_slots:
                    raise RecipeError(
                        f"{where}[{i}].filter: '{flt}' is not one of the space's kinds {list(self.kinds)}"
                    )
                if flt in by_filter:
                    raise RecipeError(f"{where}[{i}].filter: '{flt}' appears twice")
                by_filter[flt] = (i, entry["value"])
            for s, kind in enumerate(self.kind_slots):
                if kind not in by_filter:
                    name = "a default entry (no filter)" if kind is None else f"filter '{kind}'"
                    raise RecipeError(f"{where}: missing {name}")
                i, v = by_filter[kind]
                grid[:, s] = groups_of(v, f"{where}[{i}].value")
            return grid
        if isinstance(value, list):
            raise RecipeError(f"{where}: a gradient list cannot be encoded; use {{groups: [...]}}")
        grid[:, :] = groups_of(value, where)[:, None]
        return grid


# -- validation ---------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _validated(where: str, **f: Any) -> dict[str, Any]:
    """Check every field; return them normalized (tuples, FrozenDicts, floats)."""
    method = f["merge_method"]
    if not isinstance(method, str) or not method:
        raise UserError(f"{where}.merge_method: required, a merge method name such as 'dare_ties'")
    rules = RULES.get(method)
    if rules is None:
        raise UserError(f"{where}.merge_method: unknown method '{method}' (known: {', '.join(sorted(RULES))})")

    models = f["models"]
    if isinstance(models, str) or not isinstance(models, Sequence) or not models:
        raise UserError(f"{where}.models: required, a non-empty list of model paths")
    for i, m in enumerate(models):
        if not isinstance(m, str) or not m:
            raise UserError(f"{where}.models[{i}]: must be a model path, got {m!r}")
    if len(set(models)) != len(models):
        dup = next(m for m in models if list(models).count(m) > 1)
        raise UserError(f"{where}.models: '{dup}' is listed twice")

    base = f["base_model"]
    if base is not None and (not isinstance(base, str) or not base):
        raise UserError(f"{where}.base_model: must be a model path")
    if rules.base == "required" and base is None:
        raise UserError(f"{where}.base_model: {method} needs a base model")
    rules.check_model_count(len(models), f"{where}.models")  # a base is never one of them (`recipe_base`)

    groups = f["layer_groups"]
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise UserError(f"{where}.layer_groups: must be an integer >= 1, got {groups!r}")

    kinds = f["kinds"]
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise UserError(f"{where}.kinds: must be a list of tensor-name filters such as [self_attn, mlp]")
    for i, k in enumerate(kinds):
        if not isinstance(k, str) or not k or k == "*":
            raise UserError(f"{where}.kinds[{i}]: must be a non-empty tensor-name substring (not '*'), got {k!r}")
    if len(set(kinds)) != len(kinds):
        raise UserError(f"{where}.kinds: each kind may appear only once")

    search = f["search"]
    if not isinstance(search, Sequence) or not search:
        raise UserError(f"{where}.search: at least one per-model parameter must be searched")
    normalized = []
    for sp in search:
        if not isinstance(sp, SearchedParameter):
            raise UserError(f"{where}.search: entries must be SearchedParameter, got {sp!r}")
        at = f"{where}.search.{sp.name}"
        if not sp.name:
            raise UserError(f"{where}.search: a parameter name is empty")
        if not all(_is_number(b) and math.isfinite(b) for b in (sp.lower, sp.upper)):
            raise UserError(f"{at}: bounds must be finite numbers, got [{sp.lower!r}, {sp.upper!r}]")
        lower, upper = float(sp.lower), float(sp.upper)
        if not lower < upper:
            raise UserError(f"{at}: lower bound {lower} must be below upper bound {upper}")
        normalized.append(SearchedParameter(sp.name, lower, upper, _searchable(rules, sp.name, lower, upper, at)))
    names = [sp.name for sp in normalized]
    if len(set(names)) != len(names):
        raise UserError(f"{where}.search: each parameter may appear only once")
    # Canonical order: the genome layout must not depend on how a mapping's keys were ordered
    # when a config or a store serialised it.
    normalized.sort(key=lambda sp: sp.name)

    fixed = {}
    for key in ("parameters", "model_parameters"):
        raw = f[key]
        if not isinstance(raw, Mapping):
            raise UserError(f"{where}.{key}: must be a mapping of parameter name to value")
        for name, value in raw.items():
            try:
                check_value(thaw(value), f"{where}.{key}.{name}")
            except RecipeError as exc:
                raise UserError(str(exc)) from None
            if name in names:
                raise UserError(f"{where}.{key}.{name}: is also searched; fix it or search it, not both")
            rule = rules.params.get(name)
            if rule is None or (key == "model_parameters" and rule.scope == "global"):
                kind = "a per-model parameter" if key == "model_parameters" else "a parameter"
                known = ", ".join(k for k, r in rules.params.items()
                                  if key == "parameters" or r.scope == "per_model") or "none"
                raise UserError(f"{where}.{key}.{name}: not {kind} of {method} (known: {known})")
            rules.check_value(name, thaw(value), f"{where}.{key}.{name}")
        fixed[key] = raw if isinstance(raw, FrozenDict) else FrozenDict(raw)

    dtype = f["dtype"]
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"{where}.dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    seed = f["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"{where}.seed: must be a non-negative integer, got {seed!r}")

    return dict(
        merge_method=method, models=tuple(models), search=tuple(normalized), base_model=base,
        layer_groups=groups, kinds=tuple(kinds), parameters=fixed["parameters"],
        model_parameters=fixed["model_parameters"], dtype=dtype, seed=seed,
    )


def _searchable(rules: MethodRules, name: str, lower: float, upper: float, at: str) -> str:
    """The scope of a searchable parameter; a one-line error naming the method and the rule otherwise."""
    rule = rules.params.get(name)
    if rule is None:
        known = ", ".join(k for k, r in rules.params.items() if r.searchable) or "none"
        raise UserError(f"{at}: '{name}' is not a parameter of {rules.name} (searchable: {known})")
    if not rule.searchable:
        raise UserError(f"{at}: {rules.name}'s {name} is {'a flag' if rule.kind == 'bool' else 'an integer'}, "
                        "not searchable; fix it under parameters")
    if not (rule.admits(lower) and rule.admits(upper)):
        why = f"; {name} {rule.why}" if rule.why else ""
        raise UserError(f"{at}: [{lower}, {upper}] must lie inside {rule.interval} ({rules.name}'s {name}{why})")
    return rule.scope


def _short_names(paths: Sequence[str]) -> list[str]:
    """Last path component of each model when those are unique, else the full paths."""
    short = [PurePath(p).name or p for p in paths]
    return short if len(set(short)) == len(short) else list(paths)


def check_genome(x: Any, dimension: int, labels: Sequence[str]) -> np.ndarray:
    """``x`` as a float vector of shape ``(dimension,)`` inside the unit box, or an
    `InvalidGenomeError` naming the first coordinate outside it (every space's genome check)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidGenomeError(f"genome: not a vector of numbers ({exc})") from None
    if arr.shape != (dimension,):
        raise InvalidGenomeError(f"genome: expected shape ({dimension},), got {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0))
    if bad.size:
        i = int(bad[0])
        raise InvalidGenomeError(
            f"genome[{i}] ({labels[i]}) = {arr[i]!r} is outside [0, 1]"
            + (f" ({bad.size} coordinates in all)" if bad.size > 1 else "")
        )
    return arr
