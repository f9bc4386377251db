"""What each merge method accepts, without torch: its inputs and its parameters' valid ranges.

One table, read by both sides: the parameter space and recipe validation (here, torch-free)
and the kernel registry (`workers.merge_methods.registry`), which checks at import that every
kernel's signature declares exactly these parameters with these scopes and base use. Names,
scopes and input contracts follow mergekit 0.1.5 where mergekit has the method.

A `Rule` is a parameter's scope, type and interval; only float parameters are searchable
(a genome coordinate spans an interval). An interval with an infinite end is unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from search_spaces.errors import RecipeError

Scope = Literal["global", "per_model"]
BaseUse = Literal["required", "optional", "unused"]
INF = math.inf


@dataclass(frozen=True)
class Rule:
    scope: Scope
    kind: Literal["float", "int", "bool"] = "float"
    lower: float = -INF
    upper: float = INF
    lower_open: bool = False
    upper_open: bool = False
    why: str = ""  # appended to errors, e.g. "is a kept fraction"

    @property
    def searchable(self) -> bool:
        return self.kind == "float"

    @property
    def interval(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.lower == -INF and self.upper == INF:
            return "any real number"
        if self.upper == INF:
            return f"{'>' if self.lower_open else '>='} {_num(self.lower)}"
        if self.lower == -INF:
            return f"{'<' if self.upper_open else '<='} {_num(self.upper)}"
        return (f"{'(' if self.lower_open else '['}{_num(self.lower)}, "
                f"{_num(self.upper)}{')' if self.upper_open else ']'}")

    def admits(self, value: float) -> bool:
        above = value > self.lower if self.lower_open else value >= self.lower
        below = value < self.upper if self.upper_open else value <= self.upper
        return above and below and math.isfinite(value)


@dataclass(frozen=True)
class MethodRules:
    name: str
    base: BaseUse
    params: Mapping[str, Rule] = field(default_factory=dict)
    min_models: int = 1  # models merged besides the base model
    max_models: int | None = None

    @property
    def models_rule(self) -> str:
        if self.max_models == self.min_models:
            n = self.min_models
            return f"exactly {n} model{'s' if n != 1 else ''}"
        if self.max_models is None:
            return f"at least {self.min_models} model{'s' if self.min_models != 1 else ''}"
        return f"{self.min_models} to {self.max_models} models"

    def check_model_count(self, n: int, where: str) -> None:
        """One line naming the method and its rule when ``n`` models cannot be merged."""
        if n < self.min_models or (self.max_models is not None and n > self.max_models):
            besides = " besides the base model" if self.base != "unused" else ""
            raise RecipeError(f"{where}: {self.name} merges {self.models_rule}{besides}, got {n}")

    def check_value(self, name: str, value: Any, where: str) -> None:
        """Every number in ``value`` (scalar, gradient, groups or filters) must be in range."""
        rule = self.params.get(name)
        if rule is None or rule.kind == "bool":
            return
        for v in leaves(value):
            if v is None and rule.scope == "per_model":
                continue  # passthrough's "no scale"
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            if ok and rule.kind == "int":
                ok = float(v).is_integer()
            if not ok or not rule.admits(float(v)):
                why = f"; {name} {rule.why}" if rule.why else ""
                raise RecipeError(f"{where}: {v!r} is outside {rule.interval} ({self.name}'s {name}{why})")


def leaves(value: Any) -> Iterator[Any]:
    """The scalars of a recipe value: a scalar, a gradient list, {groups: [...]} or filters."""
    if isinstance(value, Mapping):
        if "groups" in value:
            yield from (x for g in value["groups"] for x in leaves(g))
        elif "value" in value:
            yield from leaves(value["value"])
    elif isinstance(value, list | tuple):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- the table ---------------------------------------------------------------------------------
_G, _M = "global", "per_model"
WEIGHT = Rule(_M)
FLAG = Rule(_G, "bool")
DENSITY = Rule(_M, lower=0, lower_open=True, upper=1, why="is a kept fraction")
FRACTION = Rule(_M, lower=0, upper=1, why="is a fraction of entries")
NONNEGATIVE = Rule(_G, lower=0)
POSITIVE = Rule(_G, lower=0, lower_open=True)


def _task_arithmetic(name: str, extra: Mapping[str, Rule] = {}) -> MethodRules:  # noqa: B006
    params = {"weight": WEIGHT, "density": DENSITY, "normalize": FLAG, "rescale": FLAG,
              "lambda": Rule(_G), "int8_mask": FLAG, **extra}
    return MethodRules(name, "required", params)


_DELLA_EPSILON = {"epsilon": Rule(_M, lower=0, upper=1, upper_open=True,
                                  why="is the spread of keep probabilities around density")}
_GAMMA = {"gamma": FRACTION}

RULES: dict[str, MethodRules] = {r.name: r for r in [
    MethodRules("linear", "unused", {"weight": WEIGHT, "normalize": FLAG}),
    MethodRules("slerp", "required", {"t": Rule(_G)}, 1, 1),
    MethodRules("passthrough", "unused", {"scale": Rule(_M)}, 1, 1),
    _task_arithmetic("task_arithmetic"),
    _task_arithmetic("ties"),
    _task_arithmetic("dare_ties"),
    _task_arithmetic("dare_linear"),
    _task_arithmetic("breadcrumbs", _GAMMA),
    _task_arithmetic("breadcrumbs_ties", _GAMMA),
    _task_arithmetic("della", _DELLA_EPSILON),
    _task_arithmetic("della_linear", _DELLA_EPSILON),
    MethodRules("model_stock", "required", {"filter_wise": FLAG}, 2),
    MethodRules("sce", "required", {
        "select_topk": Rule(_G, lower=0, lower_open=True, upper=1, why="is a kept fraction"),
        "int8_mask": FLAG}),
    MethodRules("nuslerp", "optional", {"weight": WEIGHT, "nuslerp_row_wise": FLAG, "nuslerp_flatten": FLAG}, 2, 2),
    MethodRules("multislerp", "optional", {"weight": WEIGHT, "normalize_weights": FLAG, "eps": POSITIVE}),
    MethodRules("karcher", "unused", {"max_iter": Rule(_G, "int", lower=0), "tol": POSITIVE}),
    MethodRules("nearswap", "required", {"t": NONNEGATIVE}, 1, 1),
    MethodRules("arcee_fusion", "required", {}, 1, 1),
    MethodRules("ram", "required", {"epsilon": NONNEGATIVE}),
    MethodRules("ramplus_tl", "required", {"r": NONNEGATIVE, "alpha": NONNEGATIVE, "epsilon": NONNEGATIVE}),
    MethodRules("pcb", "required", {
        "drop_ratio": Rule(_M, lower=0, upper=1, upper_open=True, why="is the fraction of entries dropped"),
        "lambda": Rule(_G)}),
    MethodRules("widen", "required", {"above_average_value_ratio": NONNEGATIVE,
                                       "score_calibration_value": Rule(_G)}),
]}


def method_rules(name: str) -> MethodRules | None:
    return RULES.get(name)


def check_recipe(recipe: Any) -> None:
    """A recipe's values and model counts against its method's rules; one line naming the
    method, the parameter (or the models) and the rule. Unknown methods are left to the registry."""
    rules = RULES.get(recipe.merge_method)
    if rules is None:
        return
    for name, value in recipe.parameters.items():
        rules.check_value(name, value, f"parameters.{name}")
    groups = [list(recipe.models)] if recipe.models else [list(sl.sources) for sl in recipe.slices]
    for entries in groups:
        for entry in entries:
            for name, value in entry.parameters.items():
                rules.check_value(name, value, f"models[{entry.model}].parameters.{name}")
    if rules.base == "required" and recipe.base_model is None:
        raise RecipeError(f"base_model: {rules.name} needs a base model")
    base = recipe.base_model
    for entries in groups:
        merged = [e for e in entries if e.model != base] if rules.base != "unused" else entries
        extra = int(rules.base == "unused" and base is not None and recipe.models
                    and all(e.model != base for e in entries))
        rules.check_model_count(len(merged) + extra, "models" if recipe.models else "slices")
