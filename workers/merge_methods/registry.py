"""The one place where merge methods are registered, by name, with their references."""

from __future__ import annotations

from workers.merge_methods.base import MergeMethod
from workers.merge_methods.linear import linear

from search_spaces.errors import RecipeError


def _build() -> dict[str, MergeMethod]:
    methods = [
        MergeMethod.define("linear", linear, reference="https://arxiv.org/abs/2203.05482"),
    ]
    registry: dict[str, MergeMethod] = {}
    for method in methods:
        if method.name in registry:
            raise ValueError(f"merge method '{method.name}' registered twice")
        registry[method.name] = method
    return registry


METHODS: dict[str, MergeMethod] = _build()


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"merge_method: unknown method '{name}' (known: {', '.join(sorted(METHODS))})") from None
