"""Any nevergrad optimizer behind our ask/tell interface, and CMA-ES with the Sakana settings.

The genome space is ``ng.p.Array(shape=(d,), lower=0, upper=1)``. nevergrad then:

- starts at the midpoint 0.5 and gives the array a mutation sigma of (upper - lower) / 6 = 1/6,
  so one standardized unit (what optimizers see) is 1/6 of a genome coordinate;
- keeps values in bounds by "bouncing" (reflecting once off a bound, then clipping), and the
  optimizer learns from the bounced point;
- samples initial points uniformly over the box for optimizers that sample (both bounds set).

Seeding: the parametrization's ``random_state`` is a ``RandomState(seed)``, which every
nevergrad optimizer (and pycma, through ``randn``) draws from. mergekit-evolve never seeded
its CMA; we do, and replay depends on it.

Seeds (``seeds=``): a generic optimizer gets them through nevergrad's ``suggest`` (its first
asks return them, in order, and it learns from them as from its own points); one that cannot
take unasked points is refused when built. CMA-ES asks them first, waits until all are told,
then centres its search on the best one, or on the centroid of the seeds tied with it (see
`CMAStrategy`).

nevergrad minimizes, so we tell ``-fitness``; a failure is told with ``-penalty_fitness()``
(see `Strategy.penalty_fitness`), never dropped, so CMA generations always complete.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import nevergrad as ng
import numpy as np

from evolve.strategies.base import Candidate, Proposal, Result, Strategy
from search_spaces.errors import UserError

ARRAY_SIGMA = 1.0 / 6.0
"""nevergrad's mutation sigma for an Array bounded to [0, 1]: (upper - lower) / 6."""

MANY_DIMENSIONS = 18
"""From this many coordinates on, nevergrad halves its own CMA step on a bounded space (0.15
instead of 0.3 of a standardized unit); `default_sigma0` halves ours there from a seed."""


def default_sigma0(dimension: int, *, from_seed: bool) -> float:
    """CMA-ES's starting step in genome units: 1/6 (the Sakana paper's), halved from
    `MANY_DIMENSIONS` coordinates on when CMA starts from a seed rather than the box's centre.

    Why: a step of sigma moves a genome sigma * sqrt(d) in all, so at 1/6 a 72-dimensional
    search lands most candidates far from a strong seed; from the uninformed centre the wide
    step is what explores. Measured on the 72-dimensional dare_ties space (benchmarks/README.md,
    section 3.3; 5 seeds, 32 candidates, best validation): from the seeds 1.938 at 1/6, 1.966 at
    1/9, 1.978 at 1/12, 1.981 at 1/20; from the centre 1.538 at 1/6 and worse at 1/12. On the
    6-dimensional kind pair 1/12 from the seeds fails (0.04 against 0.66 at 1/6), so small
    spaces keep 1/6. An explicit ``sigma0`` setting overrides the rule.
    """
    return ARRAY_SIGMA / 2 if from_seed and dimension >= MANY_DIMENSIONS else ARRAY_SIGMA


def nevergrad_names() -> list[str]:
    return sorted(ng.optimizers.registry)


def resolve_optimizer_name(name: str, extra_known: tuple[str, ...] = ()) -> str:
    """The exact nevergrad registry name for ``name`` (case-insensitive if unambiguous).

    Raises `UserError` naming close matches among nevergrad's and our own names.
    """
    registry = ng.optimizers.registry
    if name in registry:
        return name
    folded = [k for k in registry if k.lower() == str(name).lower()]
    if len(folded) == 1:
        return folded[0]
    known = [*extra_known, *sorted(registry)]
    close = difflib.get_close_matches(str(name), known, n=6, cutoff=0.6)
    close += [k for k in difflib.get_close_matches(str(name).lower(), [k.lower() for k in known], n=6, cutoff=0.6)
              if k not in close]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:6])}?" if close else ""
    raise UserError(
        f"strategy: unknown optimizer '{name}'{hint} (ours: {', '.join(extra_known)}; "
        f"or any of nevergrad's {len(registry)} optimizers, e.g. NGOpt, DE, TwoPointsDE, PSO, OnePlusOne)"
    )


def genome_parametrization(dimension: int, seed: int, start: float | np.ndarray = 0.5) -> ng.p.Array:
    """The seeded [0, 1]^d nevergrad parametrization (sigma 1/6, bouncing bounds).

    ``start``: the reference point (CMA's mean), a number for every coordinate or a genome.
    """
    centre = np.broadcast_to(np.asarray(start, dtype=np.float64), (dimension,))
    if np.all(centre == 0.5):
        param = ng.p.Array(shape=(dimension,), lower=0.0, upper=1.0)
    else:  # same bounds and sigma; only the reference point (CMA's start) moves
        param = ng.p.Array(init=centre.copy(), lower=0.0, upper=1.0)
    param.random_state = np.random.RandomState(seed)
    return param


class NevergradStrategy(Strategy):
    """Any optimizer of ``ng.optimizers.registry`` by name, e.g. "NGOpt", "DE", "PSO".

    ``num_workers`` is nevergrad's: how many candidates may be in flight at once. `ask` never
    exceeds it (it returns fewer candidates until results come back), because several
    nevergrad optimizers are sequential underneath (NGOpt may pick Cobyla, whose second
    outstanding ask blocks forever). The driver should pass its number of evaluation workers;
    the default 1 is safe but serial. None lifts the cap (nevergrad is then told 1 worker):
    only for optimizers known to take any number of asks in flight, like CMA.
    ``budget``: the run's number of evaluations; NGOpt and its family require it.
    """

    name = "nevergrad"
    asks_seeds_itself = True  # through nevergrad's suggest

    def __init__(
        self,
        dimension: int,
        seed: int = 0,
        *,
        optimizer: str = "NGOpt",
        budget: int | None = None,
        num_workers: int | None = 1,
        failure_fitness: float | None = None,
        seeds: Sequence[Sequence[float]] = (),
    ) -> None:
        self.optimizer_name = resolve_optimizer_name(optimizer)
        if type(self).name == NevergradStrategy.name:
            self.name = self.optimizer_name
        super().__init__(dimension, seed, failure_fitness=failure_fitness, seeds=seeds)
        _check_positive("budget", budget, allow_none=True)
        _check_positive("num_workers", num_workers, allow_none=True)
        self.budget = budget
        self.max_in_flight = num_workers  # None: no cap
        self.num_workers = num_workers or 1
        self._handles: dict[str, Any] = {}
        self.optimizer = self._instantiate()
        self._probe()
        if self.asks_seeds_itself:
            for genome in reversed(self.seeds):  # suggest is last in, first out
                self.optimizer.suggest(genome.copy())

    def _instantiate(self) -> Any:
        try:
            return self._factory()(
                parametrization=genome_parametrization(self.dimension, self.seed, self._start()),
                budget=self.budget,
                num_workers=self.num_workers,
            )
        except Exception as exc:  # noqa: BLE001 - nevergrad rejects settings with assorted errors
            self._bad_settings(exc)

    def _probe(self) -> None:
        """Fail at configuration time, not mid-run: ask a throwaway copy for one point."""
        probe = self._instantiate()
        try:
            probe.ask()
        except Exception as exc:  # noqa: BLE001 - nevergrad signals bad settings with asserts
            self._bad_settings(exc)
        if self.seeds and self.asks_seeds_itself:
            probe.suggest(self.seeds[0].copy())
            try:
                probe.tell(probe.ask(), 0.0)
            except ng.errors.TellNotAskedNotSupportedError:
                raise UserError(f"strategy '{self.optimizer_name}': cannot learn from seeds (nevergrad's "
                                "suggest); set strategy.seeds: none, or use cma") from None

    def _bad_settings(self, exc: Exception) -> None:
        hint = ""
        if self.budget is None and isinstance(exc, AssertionError):
            hint = " (it needs 'budget': the run's number of evaluations)"
        elif "parallel" in str(exc):
            hint = " (it is sequential: set num_workers to 1)"
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise UserError(
            f"strategy '{self.optimizer_name}': nevergrad cannot run it with budget={self.budget}, "
            f"num_workers={self.num_workers}{hint}; {detail}"
        ) from None

    def _factory(self) -> Any:
        """The nevergrad optimizer class or configured optimizer to instantiate."""
        return ng.optimizers.registry[self.optimizer_name]

    def _start(self) -> float:
        return 0.5

    def _seed_ready(self) -> bool:
        return self.max_in_flight is None or self.num_pending < self.max_in_flight

    def _ask(self) -> Proposal | None:
        if not self._seed_ready():
            return None  # nevergrad's contract: at most num_workers points in flight
        handle = self.optimizer.ask()
        genome = np.clip(np.asarray(handle.value, dtype=np.float64), 0.0, 1.0)
        info: dict[str, Any] = {"generation": self._generation(handle)}
        k = len(self._seed_ids)
        if self.asks_seeds_itself and k < len(self.seeds):
            info = {"origin": "seed", "seed_index": k, "generation": 0}
        return Proposal(genome=genome, info=info, handle=handle)

    def _generation(self, handle: Any) -> int:
        """Lineage depth nevergrad keeps on its candidates (0 for sampled ones)."""
        return max(int(getattr(handle, "generation", 1)) - 1, 0)

    def _on_asked(self, candidate: Candidate, proposal: Proposal) -> None:
        if proposal.handle is not None:  # None: a seed the base class asked (CMA)
            self._handles[candidate.id] = proposal.handle

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        handle = self._handles.pop(candidate.id)
        self.optimizer.tell(handle, -float(fitness))  # nevergrad minimizes

    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer_name, "budget": self.budget, "num_workers": self.max_in_flight}


class CMAStrategy(NevergradStrategy):
    """nevergrad's CMA-ES with the *Evolutionary Optimization of Model Merging Recipes* settings.

    ``sigma0`` (default: `default_sigma0`, 1/6, or 1/12 from a seed in 18 or more coordinates)
    and ``start`` (default 0.5) are in genome units. nevergrad's CMA takes its step size in
    standardized units (1 unit = 1/6 of a coordinate here) and, for a
    fully bounded space, multiplies it by 0.3 (d < 18) or 0.15; we set its ``scale`` so that
    the step CMA actually starts with is ``sigma0``, and check that it did.
    ``popsize`` defaults to nevergrad's ``4 + int(3 ln d)``, raised to ``num_workers`` if below.
    ``num_workers`` defaults to None: no cap on candidates in flight (nevergrad's CMA samples a
    new population when one runs out and tells pycma every ``popsize`` results, whichever
    generation they came from); give it to cap them. Candidates carry ``info["generation"]``:
    the CMA generation (pycma iteration) they were sampled in.

    Seeds are asked first (CMA proposes nothing until all are told); then CMA is rebuilt with
    its mean at the best successful seed, same seed, instead of ``start``, and with
    `default_sigma0`'s step from a seed unless ``sigma0`` was given. Where the scores cannot
    rank other seeds below the best (`seeds_tied_with_best`), the mean is the centroid of those
    tied seeds instead, as CMA's own recombination would place it (``centre_on: tied``, the
    default; ``best`` takes the best seed alone, as the driver does for a space with on/off
    coordinates, where a centroid of two layer paths is neither). Seeds are not told to CMA
    itself: they are not samples of its distribution. If every seed failed, CMA starts at
    ``start``.
    """

    name = "cma"
    asks_seeds_itself = False

    def __init__(
        self,
        dimension: int,
        seed: int = 0,
        *,
        sigma0: float | None = None,
        popsize: int | None = None,
        start: float = 0.5,
        diagonal: bool = False,
        elitist: bool = False,
        centre_on: str = "tied",
        budget: int | None = None,
        num_workers: int | None = None,
        failure_fitness: float | None = None,
        seeds: Sequence[Sequence[float]] = (),
    ) -> None:
        self.sigma0_setting = sigma0  # None: default_sigma0's, which changes once CMA has a seed
        if sigma0 is None:
            sigma0 = default_sigma0(dimension, from_seed=False)
        if not isinstance(sigma0, int | float) or not 0 < sigma0 <= 1:
            raise UserError(f"cma.sigma0: must be in (0, 1] (genome units), got {sigma0!r}")
        if not isinstance(start, int | float) or not 0 < start < 1:
            raise UserError(f"cma.start: must be inside (0, 1), got {start!r}")
        _check_positive("popsize", popsize, allow_none=True, minimum=2)
        if centre_on not in ("tied", "best"):
            raise UserError(f"cma.centre_on: must be tied or best, got {centre_on!r}")
        if dimension == 1:
            raise UserError(
                "cma: needs at least 2 genome coordinates (nevergrad runs 1-D CMA through the "
                "optional fcmaes package); use 'random' or another optimizer for a 1-D space"
            )
        self.sigma0 = float(sigma0)
        self.popsize = popsize
        self.start = float(start)
        self.diagonal = bool(diagonal)
        self.elitist = bool(elitist)
        self.centre_on = centre_on
        self.centre: np.ndarray | None = None  # the best seed (or tied seeds' centroid), once told
        self.centre_seeds: tuple[str, ...] = ()  # the candidate ids it was computed from
        super().__init__(dimension, seed, optimizer="CMA", budget=budget, num_workers=num_workers,
                         failure_fitness=failure_fitness, seeds=seeds)
        self._check_sigma()

    def _check_sigma(self) -> None:
        effective = float(self.optimizer.es.sigma0) * ARRAY_SIGMA
        if not np.isclose(effective, self.sigma0, rtol=1e-9, atol=0):
            raise RuntimeError(
                f"cma: nevergrad started CMA with sigma {effective:.6g} in genome units instead of "
                f"{self.sigma0:.6g}; its step-size convention changed, update CMAStrategy"
            )

    def _factory(self) -> Any:
        bounded_multiplier = 0.3 if self.dimension < MANY_DIMENSIONS else 0.15  # nevergrad 1.0.12, _CMA.es
        return ng.optimizers.ParametrizedCMA(
            scale=self.sigma0 / ARRAY_SIGMA / bounded_multiplier,
            popsize=self.popsize,
            diagonal=self.diagonal,
            elitist=self.elitist,
        )

    def _start(self) -> float | np.ndarray:
        return self.start if self.centre is None else self.centre

    def _ask(self) -> Proposal | None:
        if self.seeds_pending:
            return None  # CMA centres on the best seed: wait until every seed is told
        return super()._ask()

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        if candidate.id in self._handles:
            super()._tell(candidate, result, fitness)
            return
        if not self.seeds_pending:  # the last seed came back: centre CMA on the best one(s)
            tied = seeds_tied_with_best(self.seed_results())[: 1 if self.centre_on == "best" else None]
            if tied:
                self.centre = np.mean([c.array for c in tied], axis=0)
                self.centre_seeds = tuple(c.id for c in tied)
                if self.sigma0_setting is None:
                    self.sigma0 = default_sigma0(self.dimension, from_seed=True)
                self.optimizer = self._instantiate()
                self._check_sigma()

    def _probe(self) -> None:
        pass  # CMA is known to work; its es is built (and checked) below

    def _generation(self, handle: Any) -> int:
        return int(self.optimizer._es.countiter)  # not `.es`: that property may restart the ES

    def _state(self) -> dict[str, Any]:
        es = self.optimizer._es  # already built in __init__
        return {
            **super()._state(),
            "sigma0": self.sigma0,
            "start": self.start,
            "centre": None if self.centre is None else [float(v) for v in self.centre],
            "centre_seeds": list(self.centre_seeds),
            "popsize": int(es.popsize),
            "generation": int(es.countiter),
            "sigma": float(es.sigma) * ARRAY_SIGMA,
        }


TIE_SIGNIFICANCE = 0.05
"""One-sided sign-test level at which a seed counts as worse than the best one."""


def seeds_tied_with_best(told: Sequence[tuple[Candidate, Result]]) -> list[Candidate]:
    """The best successful seed (earliest on equal fitness), then every other successful seed
    that its scores cannot rank below it, in seed order.

    Why: on a flat landscape a one-document difference would decide where CMA searches (on the
    kind pair, uniform weights 1 beat 1/2 by 2 documents to 1 and put the search far from the
    answer; benchmarks/README.md section 3.6). A seed is worse when a one-sided sign test over
    the documents both were scored on (the same tasks, the same count) puts the best ahead at
    `TIE_SIGNIFICANCE`; without comparable per-sample scores, only an equal fitness ties.
    """
    ok = [(c, r) for c, r in told if not r.failed]
    if not ok:
        return []
    best_index = max(range(len(ok)), key=lambda i: (ok[i][1].fitness, -i))
    best, best_result = ok[best_index]
    tied = [best]
    for candidate, result in ok:
        if candidate is not best and not _ranked_below(result, best_result):
            tied.append(candidate)
    return tied


def _ranked_below(result: Result, best: Result) -> bool:
    """Whether ``best`` beats ``result`` significantly, document by document (sign test)."""
    if result.fitness == best.fitness:
        return False
    shared = [t for t in (best.samples or {}) if len((result.samples or {}).get(t, ())) == len(best.samples[t])]
    if not shared:
        return True
    diff = np.concatenate([np.asarray(best.samples[t]) - np.asarray(result.samples[t]) for t in shared])
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    return _sign_test_p(wins, wins + losses) <= TIE_SIGNIFICANCE


def _sign_test_p(wins: int, n: int) -> float:
    """P(at least ``wins`` of ``n`` fair coin flips): exact up to 200 flips, else the normal
    approximation with continuity correction (the exact sum of big integers grows as n^2)."""
    if n <= 200:
        return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    z = (wins - 0.5 - n / 2) / math.sqrt(n / 4)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _check_positive(name: str, value: Any, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"strategy.{name}: must be an integer >= {minimum}, got {value!r}")
