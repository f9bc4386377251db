"""Strategies by name: ours ("cma", "random", "m2n2") and any nevergrad optimizer.

Our names match case-insensitively and take precedence, so "CMA" is our CMA-ES with the
Sakana settings (sigma0 = 1/6, start 0.5), not nevergrad's default-configured "CMA". Any other
name is looked up in ``ng.optimizers.registry`` (exactly, then case-insensitively).
"""

from __future__ import annotations

import inspect
from typing import Any

from evolve.strategies.base import Strategy
from evolve.strategies.m2n2 import M2N2Strategy
from evolve.strategies.nevergrad_strategy import CMAStrategy, NevergradStrategy, resolve_optimizer_name
from evolve.strategies.random_search import RandomSearch
from search_spaces.errors import UserError

STRATEGIES: dict[str, type[Strategy]] = {
    "cma": CMAStrategy,
    "random": RandomSearch,
    "m2n2": M2N2Strategy,
}


def strategy_names() -> list[str]:
    """Our own strategy names (nevergrad's come on top: `nevergrad_strategy.nevergrad_names`)."""
    return list(STRATEGIES)


def settings_of(name: str) -> list[str]:
    """The settings (keyword arguments) strategy ``name`` accepts."""
    cls, _ = _resolve(name)
    return _keywords(cls)


def make_strategy(
    name: str, space_dimension: int, seed: int = 0, *, num_workers: int | None = None, **settings: Any
) -> Strategy:
    """A fresh strategy; unknown names or settings raise `UserError` naming the known ones.

    ``num_workers`` (the driver's parallelism) goes to the strategies that take it (nevergrad's
    cap candidates in flight at it) and is ignored by the others (random, m2n2).
    """
    cls, optimizer = _resolve(name)
    known = _keywords(cls)
    if num_workers is not None and "num_workers" in known:
        settings = {"num_workers": num_workers, **settings}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise UserError(f"strategy '{name}': unknown setting '{unknown[0]}' (known: {', '.join(known)})")
    if optimizer is not None:
        settings = {**settings, "optimizer": optimizer}
    return cls(space_dimension, seed, **settings)


def _resolve(name: str) -> tuple[type[Strategy], str | None]:
    if not isinstance(name, str) or not name:
        raise UserError(f"strategy: a name is required ({', '.join(STRATEGIES)} or a nevergrad optimizer)")
    if name.lower() in STRATEGIES:
        return STRATEGIES[name.lower()], None
    return NevergradStrategy, resolve_optimizer_name(name, extra_known=tuple(STRATEGIES))


def _keywords(cls: type[Strategy]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "optimizer"]
