"""Multi-objective search: steady-state NSGA-II over per-task scores ("pareto").

One objective per task (``objectives``: task names; default every task of the run, in the run
config's order), each the mean of the task's per-sample validation scores in ``Result.samples``
(the task's accuracy for 0/1 metrics), all maximised. Without tasks (a strategy built outside a
run) the objectives are the tasks of the first successful result, or its fitness alone when it
has no per-sample scores. The scalar fitness (the weighted sum the loop records) plays no part
in selection, so the search keeps trade-offs a weighted sum would discard, e.g. the target task
against each expert's own skill.

Why not nevergrad's multi-objective mode: it folds the losses into one hypervolume-gain scalar
against reference bounds guessed from the first tells and hands that to a single-objective
optimizer; NSGA-II keeps the whole front and its spread explicitly, in a few lines of numpy.

- Archive (``population``, default 20): every successful result joins (failures never do); when
  the archive is over capacity the member dropped is in the last non-dominated front, with the
  smallest crowding distance there (a copy of an older member's scores counts 0: it adds no
  spread), the oldest among equals (so the newcomer wins ties).
- Initial population: the seeds (asked first, like every strategy), then uniform random genomes
  until members plus starters in flight reach ``population`` (again whenever failures thin it).
- Child: two binary tournaments (two distinct members drawn uniformly; lower front wins, then
  larger crowding distance, then the first drawn; both may pick the same member), simulated
  binary crossover (SBX, ``eta`` ``crossover_eta``, with probability ``crossover_rate``, each
  coordinate with probability 1/2) and polynomial mutation (``mutation_eta``, each coordinate with probability ``mutation_rate``,
  default 1/dimension), clipped to [0, 1]. Both ``eta`` default to 2, not NSGA-II's usual 15
  and 20: those keep children close to their parents, which pays over tens of thousands of
  evaluations; at 200-300 they did no better than random search on ZDT1 and on two competing
  spheres (6 and 12 dimensions), where eta = 2 beat it clearly (tests/evolve/test_pareto.py).

Draw order per child (fixed, so a replay reproduces it): tournament 1, tournament 2, then
``rng.random()`` (crossover or not), four vectors of ``dimension`` uniforms (SBX coordinate
mask, SBX spread, mutation mask, mutation spread), all drawn whether used or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evolve.pareto import crowding_distance, non_dominated_sort
from evolve.strategies.base import Candidate, Proposal, Result, Strategy
from search_spaces.errors import UserError

FITNESS_OBJECTIVE = "<fitness>"
"""The one objective of results without per-sample scores outside a run: their fitness."""


def sbx(p1: np.ndarray, p2: np.ndarray, eta: float, mask: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One SBX child of ``p1`` and ``p2``: spread ``u`` in [0, 1) per coordinate, only where ``mask``."""
    beta = np.where(u <= 0.5, (2.0 * u) ** (1.0 / (eta + 1.0)), (1.0 / (2.0 * (1.0 - u))) ** (1.0 / (eta + 1.0)))
    child = 0.5 * ((1.0 + beta) * p1 + (1.0 - beta) * p2)
    return np.clip(np.where(mask, child, p1), 0.0, 1.0)


def polynomial_mutation(x: np.ndarray, eta: float, mask: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Deb's polynomial mutation on [0, 1]: a shift in (-1, 1), most often small, where ``mask``."""
    delta = np.where(u < 0.5, (2.0 * u) ** (1.0 / (eta + 1.0)) - 1.0, 1.0 - (2.0 * (1.0 - u)) ** (1.0 / (eta + 1.0)))
    return np.clip(np.where(mask, x + delta, x), 0.0, 1.0)


class ParetoStrategy(Strategy):
    """Steady-state NSGA-II (see the module docstring). Children carry their two parents' ids."""

    name = "pareto"

    def __init__(
        self,
        dimension: int,
        seed: int = 0,
        *,
        population: int = 20,
        objectives: Sequence[str] | None = None,
        crossover_rate: float = 0.9,
        crossover_eta: float = 2.0,
        mutation_eta: float = 2.0,
        mutation_rate: float | None = None,
        failure_fitness: float | None = None,
        seeds: Sequence[Sequence[float]] = (),
        task_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(dimension, seed, failure_fitness=failure_fitness, seeds=seeds)
        if not isinstance(population, int) or isinstance(population, bool) or population < 2:
            raise UserError(f"pareto.population: must be an integer >= 2, got {population!r}")
        tasks = list(task_weights or {})
        if objectives is not None:
            if (isinstance(objectives, str) or not isinstance(objectives, Sequence) or not objectives
                    or not all(isinstance(t, str) for t in objectives) or len(set(objectives)) != len(objectives)):
                raise UserError(f"pareto.objectives: the setting takes a list of distinct task names, got {objectives!r}")
            unknown = [t for t in objectives if tasks and t not in tasks]
            if unknown:
                raise UserError(f"pareto.objectives: task '{unknown[0]}' is not one of the run's tasks "
                                f"({', '.join(tasks)}); the setting takes task names")
        for key, value, low, high in (("crossover_rate", crossover_rate, 0.0, 1.0),
                                      ("mutation_rate", 1.0 if mutation_rate is None else mutation_rate, 0.0, 1.0),
                                      ("crossover_eta", crossover_eta, 0.0, math.inf),
                                      ("mutation_eta", mutation_eta, 0.0, math.inf)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise UserError(f"pareto.{key}: must be a number in [{low:g}, {high:g}], got {value!r}")
        self.population = population
        self.objectives: tuple[str, ...] | None = tuple(objectives or tasks) or None  # None: from the first result
        self.crossover_rate = float(crossover_rate)
        self.crossover_eta = float(crossover_eta)
        self.mutation_eta = float(mutation_eta)
        self.mutation_rate = 1.0 / dimension if mutation_rate is None else float(mutation_rate)
        self._starting: set[str] = set()  # seeds and random starters in flight
        self._archive: list[str] = []  # member ids, in order of entry
        self._scores: dict[str, np.ndarray] = {}  # member id -> objective vector
        self._generations: dict[str, int] = {}
        self._ranking: tuple[np.ndarray, np.ndarray] | None = None  # (front index, crowding) per member

    # -- ask ---------------------------------------------------------------------------------
    def _ask(self) -> Proposal | None:
        members = len(self._archive)
        if members + len(self._starting) < self.population:
            return Proposal(self.rng.random(self.dimension), info={"origin": "random", "generation": 0})
        if members < 2:
            return None  # starters in flight fill the population: wait (no state touched)
        i, j = self._tournament(), self._tournament()
        p1, p2 = self.candidate(self._archive[i]).array, self.candidate(self._archive[j]).array
        crossover = self.rng.random() < self.crossover_rate
        cross_mask, cross_u, mutate_mask, mutate_u = (self.rng.random(self.dimension) for _ in range(4))
        child = sbx(p1, p2, self.crossover_eta, cross_mask < 0.5, cross_u) if crossover else p1
        child = polynomial_mutation(child, self.mutation_eta, mutate_mask < self.mutation_rate, mutate_u)
        id1, id2 = self._archive[i], self._archive[j]
        generation = 1 + max(self._generations[id1], self._generations[id2])
        return Proposal(child, parents=(id1, id2), info={"origin": "child", "generation": generation})

    def _tournament(self) -> int:
        front, crowding = self._ranked()
        a, b = (int(k) for k in self.rng.choice(len(self._archive), size=2, replace=False))
        if front[b] < front[a] or (front[b] == front[a] and crowding[b] > crowding[a]):
            return b
        return a

    def _ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """Each member's front index (0 = non-dominated) and crowding distance within its front."""
        if self._ranking is None:
            points = np.stack([self._scores[m] for m in self._archive])
            front = np.zeros(len(points), dtype=int)
            crowding = np.zeros(len(points))
            for k, members in enumerate(non_dominated_sort(points)):
                front[members] = k
                crowding[members] = crowding_distance(points[members])
            self._ranking = front, crowding
        return self._ranking

    def _on_asked(self, candidate: Candidate, proposal: Proposal) -> None:
        self._generations[candidate.id] = int(proposal.info.get("generation", 0))
        if proposal.info.get("origin") in ("seed", "random"):
            self._starting.add(candidate.id)

    # -- tell --------------------------------------------------------------------------------
    def _check_result(self, result: Result) -> None:
        self._objective_vector(result)

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        self._starting.discard(candidate.id)
        if result.failed:
            return
        if self.objectives is None:
            self.objectives = tuple(sorted(result.samples)) if result.samples else (FITNESS_OBJECTIVE,)
        self._archive.append(candidate.id)
        self._scores[candidate.id] = self._objective_vector(result)
        self._ranking = None
        if len(self._archive) > self.population:
            front, crowding = self._ranked()
            last = np.flatnonzero(front == front.max())
            drop = self._archive.pop(int(last[np.argmin(crowding[last])]))  # argmin: the oldest of equals
            del self._scores[drop]
            self._ranking = None

    def _objective_vector(self, result: Result) -> np.ndarray:
        """The result's objectives; ValueError when it lacks an objective's per-sample scores."""
        names = self.objectives or (tuple(sorted(result.samples)) if result.samples else (FITNESS_OBJECTIVE,))
        if names == (FITNESS_OBJECTIVE,):
            return np.array([float(result.fitness)])
        samples = result.samples or {}
        missing = [t for t in names if not len(samples.get(t, ()))]
        if missing:
            raise ValueError(f"pareto: the result has no per-sample scores for objective task '{missing[0]}' "
                             f"(objectives: {', '.join(names)})")
        return np.array([float(np.mean(samples[t])) for t in names])

    # -- introspection -----------------------------------------------------------------------
    @property
    def archive(self) -> tuple[str, ...]:
        """Member ids, in order of entry."""
        return tuple(self._archive)

    @property
    def front(self) -> tuple[str, ...]:
        """The archive's non-dominated members, in order of entry."""
        if not self._archive:
            return ()
        front, _ = self._ranked()
        return tuple(m for m, k in zip(self._archive, front) if k == 0)

    def objective_values(self, candidate_id: str) -> tuple[float, ...]:
        """A member's objective vector, in the order of ``objectives``."""
        return tuple(float(v) for v in self._scores[candidate_id])

    def _state(self) -> dict[str, Any]:
        members = []
        if self._archive:
            front, crowding = self._ranked()
            for m, k, c in zip(self._archive, front, crowding):
                members.append({"id": m, "front": int(k), "crowding": None if math.isinf(c) else float(c),
                                "objectives": list(self.objective_values(m)),
                                "parents": list(self.candidate(m).parents)})
        return {"population": self.population,
                "objectives": None if self.objectives is None else list(self.objectives),
                "crossover_rate": self.crossover_rate, "crossover_eta": self.crossover_eta,
                "mutation_eta": self.mutation_eta, "mutation_rate": self.mutation_rate,
                "front": list(self.front), "archive": members}
