"""Strategies by name: ours ("cma", "random", "m2n2", "pareto") and any nevergrad optimizer.

Our names match case-insensitively and take precedence, so "CMA" is our CMA-ES with the
Sakana settings (sigma0 = 1/6, start 0.5; from a seed in 18 or more coordinates, sigma0 = 1/12:
`default_sigma0`), not nevergrad's default-configured "CMA". Any other
name is looked up in ``ng.optimizers.registry`` (exactly, then case-insensitively).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evolve.strategies.base import Strategy
from evolve.strategies.m2n2 import GenomeLayout, M2N2Strategy
from evolve.strategies.nevergrad_strategy import CMAStrategy, NevergradStrategy, resolve_optimizer_name
from evolve.strategies.pareto import ParetoStrategy
from evolve.strategies.random_search import RandomSearch
from search_spaces.errors import UserError

if TYPE_CHECKING:
    from search_spaces.parameter_space import ParameterSpace

INJECTED = ("optimizer", "seeds", "task_weights", "layout")
"""Keywords the driver supplies through `make_strategy`'s own arguments, never as settings."""

STRATEGIES: dict[str, type[Strategy]] = {
    "cma": CMAStrategy,
    "random": RandomSearch,
    "m2n2": M2N2Strategy,
    "pareto": ParetoStrategy,
}


def strategy_names() -> list[str]:
    """Our own strategy names (nevergrad's come on top: `nevergrad_strategy.nevergrad_names`)."""
    return list(STRATEGIES)


def settings_of(name: str) -> list[str]:
    """The settings (keyword arguments) strategy ``name`` accepts."""
    cls, _ = _resolve(name)
    return _keywords(cls)


def make_strategy(
    name: str,
    space_dimension: int,
    seed: int = 0,
    *,
    num_workers: int | None = None,
    seeds: Sequence[Sequence[float]] = (),
    task_weights: Mapping[str, float] | None = None,
    space: ParameterSpace | None = None,
    **settings: Any,
) -> Strategy:
    """A fresh strategy; unknown names or settings raise `UserError` naming the known ones.

    What the driver knows goes in its own arguments, to the strategies that take it:
    ``num_workers`` (nevergrad's cap candidates in flight at it; random and m2n2 ignore it),
    ``seeds`` (initial genomes, asked first: every strategy takes them; `evolve.seeds` builds
    them from ``strategy.seeds``), ``task_weights`` (task name -> the run config's weight:
    m2n2 weighs its per-sample scores by them; pareto's default objectives are these tasks) and
    ``space`` (m2n2 reads its layer groups, weight coordinates and bounds through
    `GenomeLayout.from_space`; a space with on/off coordinates, a data-flow space, makes cma
    centre on its best seed alone unless ``centre_on`` is given).
    """
    cls, optimizer = _resolve(name)
    known = _keywords(cls)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if num_workers is not None and "num_workers" in known:
        settings = {"num_workers": num_workers, **settings}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise UserError(f"strategy '{name}': unknown setting '{unknown[0]}' (known: {', '.join(known)})")
    if optimizer is not None:
        settings = {**settings, "optimizer": optimizer}
    if seeds:
        settings["seeds"] = seeds
    if task_weights is not None and "task_weights" in accepted:
        settings["task_weights"] = task_weights
    if getattr(space, "binary_indices", ()) and "centre_on" in known:
        settings = {"centre_on": "best", **settings}  # a centroid of on/off coordinates means nothing
    if space is not None and "layout" in accepted:
        if space.dimension != space_dimension:
            raise UserError(f"strategy '{name}': space has {space.dimension} coordinates, not {space_dimension}")
        settings["layout"] = GenomeLayout.from_space(space)
    return cls(space_dimension, seed, **settings)


def _resolve(name: str) -> tuple[type[Strategy], str | None]:
    if not isinstance(name, str) or not name:
        raise UserError(f"strategy: a name is required ({', '.join(STRATEGIES)} or a nevergrad optimizer)")
    if name.lower() in STRATEGIES:
        return STRATEGIES[name.lower()], None
    return NevergradStrategy, resolve_optimizer_name(name, extra_known=tuple(STRATEGIES))


def _keywords(cls: type[Strategy]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in INJECTED]
