"""M2N2 over recipe genomes: *Competition and Attraction Improve Model Fusion* (Sakana AI, 2025).

https://arxiv.org/abs/2508.16204. A steady-state archive of genomes (default 20), each with
its per-sample scores ``s_ij`` (``Result.samples``, tasks in sorted order, concatenated).

- Competition fitness: ``f_i = sum_j s_ij / (z_j**alpha + eps)`` with ``z_j = sum_k s_kj``;
  ``alpha = 1`` shares each sample's reward among the members that solve it; ``alpha = 0`` is
  the plain-GA ablation.
- Parent 1 is drawn with probability proportional to ``f``. Parent 2 (never parent 1) is drawn
  proportional to the attraction ``g(A, B) = sum_j max(s_Bj - s_Aj, 0) / (z_j + eps)``: the
  members that solve what parent 1 misses.
- Child: a split point ``k`` uniform in ``{0, ..., d-1}`` over the ordered genome coordinates
  (layer groups come first, see `ParameterSpace`) and a mix ratio ``w ~ U(0, 1)``; coordinates
  before ``k`` take ``SLERP_w(p1, p2)``, the rest ``SLERP_{1-w}(p1, p2)``, with the angle taken
  over the whole vectors (as the reference implementation does); clipped into [0, 1].
- Replacement: a successful child joins; when the archive is over capacity, the member with
  the lowest competition fitness (recomputed with the child) is dropped, possibly the child.

Scheduling (asynchronous, no generation barrier): while the archive plus the initial genomes
in flight is below capacity, `ask` gives initial genomes (the given seeds first, then uniform
random ones), so failed initial genomes are replaced. Otherwise it breeds once at least two
members are in the archive, and answers "not yet" (fewer candidates) before that. Failures
never enter the archive. Per-sample scores must be non-negative (accuracies, 0/1 hits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evolve.strategies.base import Candidate, Proposal, Result, Strategy
from search_spaces.errors import UserError

EPSILON = 1e-8
SLERP_PARALLEL = 1e-6
"""Below this sin(angle) (or for a zero vector) SLERP falls back to linear interpolation."""


# -- the pieces, as pure functions ------------------------------------------------------------------
def competition_fitness(scores: np.ndarray, alpha: float = 1.0, eps: float = EPSILON) -> np.ndarray:
    """``f_i = sum_j s_ij / (z_j**alpha + eps)`` for a (members, samples) score matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    z = scores.sum(axis=0)
    return (scores / (z**alpha + eps)).sum(axis=1)


def attraction(scores: np.ndarray, a: int, eps: float = EPSILON) -> np.ndarray:
    """``g(A, B)`` for parent ``A = scores[a]`` and every member ``B`` (``g(A, A) = 0``)."""
    scores = np.asarray(scores, dtype=np.float64)
    z = scores.sum(axis=0)
    return (np.maximum(scores - scores[a], 0.0) / (z + eps)).sum(axis=1)


def slerp(w: float | np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spherical interpolation from ``a`` (w = 0) to ``b`` (w = 1); ``w`` may be per coordinate.

    The angle is that between the directions of the whole vectors; the vectors' own lengths
    are interpolated along. Nearly parallel or zero vectors interpolate linearly.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na > 0 and nb > 0:
        omega = float(np.arccos(np.clip(np.dot(a / na, b / nb), -1.0, 1.0)))
        sin_omega = np.sin(omega)
        if sin_omega > SLERP_PARALLEL:
            return (np.sin((1.0 - w) * omega) * a + np.sin(w * omega) * b) / sin_omega
    return (1.0 - w) * a + w * b


def crossover(p1: np.ndarray, p2: np.ndarray, split: int, w: float) -> np.ndarray:
    """The M2N2 child: ``SLERP_w`` on coordinates ``< split``, ``SLERP_{1-w}`` on the rest, in [0, 1]."""
    p1 = np.asarray(p1, dtype=np.float64)
    ratio = np.where(np.arange(p1.shape[0]) < split, w, 1.0 - w)
    return np.clip(slerp(ratio, p1, p2), 0.0, 1.0)


def sample_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """An index drawn proportionally to non-negative ``weights`` (uniformly if they sum to 0)."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    p = weights / total if total > 0 else np.full(weights.shape, 1.0 / weights.size)
    return int(rng.choice(weights.size, p=p))


def least_fit(scores: np.ndarray, alpha: float = 1.0, eps: float = EPSILON) -> int:
    """The member replacement drops: lowest competition fitness; among ties, the newest (last row)."""
    f = competition_fitness(scores, alpha, eps)
    return int(np.flatnonzero(f == f.min())[-1])


# -- the strategy ------------------------------------------------------------------------------------
class M2N2Strategy(Strategy):
    """Steady-state M2N2 (see the module docstring). Candidates carry parent ids for lineage."""

    name = "m2n2"

    def __init__(
        self,
        dimension: int,
        seed: int = 0,
        *,
        archive_size: int = 20,
        alpha: float = 1.0,
        attraction: bool = True,
        initial_genomes: Sequence[Sequence[float]] = (),
        mutation_std: float = 0.0,
        epsilon: float = EPSILON,
        failure_fitness: float | None = None,
    ) -> None:
        super().__init__(dimension, seed, failure_fitness=failure_fitness)
        if not isinstance(archive_size, int) or isinstance(archive_size, bool) or archive_size < 2:
            raise UserError(f"m2n2.archive_size: must be an integer >= 2, got {archive_size!r}")
        if not isinstance(alpha, int | float) or not 0 <= alpha:
            raise UserError(f"m2n2.alpha: must be a number >= 0 (1 = competition, 0 = plain GA), got {alpha!r}")
        if not isinstance(mutation_std, int | float) or not 0 <= mutation_std:
            raise UserError(f"m2n2.mutation_std: must be >= 0, got {mutation_std!r}")
        if not isinstance(epsilon, int | float) or not 0 < epsilon:
            raise UserError(f"m2n2.epsilon: must be > 0, got {epsilon!r}")
        seeds = []
        for i, g in enumerate(initial_genomes):
            arr = np.asarray(g, dtype=np.float64)
            if arr.shape != (dimension,) or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise UserError(f"m2n2.initial_genomes[{i}]: must be {dimension} numbers in [0, 1]")
            seeds.append(arr)
        if len(seeds) > archive_size:
            raise UserError(f"m2n2.initial_genomes: {len(seeds)} given, more than archive_size {archive_size}")
        self.archive_size = archive_size
        self.alpha = float(alpha)
        self.use_attraction = bool(attraction)
        self.mutation_std = float(mutation_std)
        self.epsilon = float(epsilon)
        self._seeds = seeds
        self._num_initial = 0                # initial genomes asked so far
        self._initial_pending: set[str] = set()
        self._archive: list[str] = []        # member ids, in order of entry
        self._scores: dict[str, np.ndarray] = {}
        self._fitness: dict[str, float] = {}
        self._layout: tuple[tuple[str, int], ...] | None = None
        self._num_dropped = 0
        self._generations: dict[str, int] = {}  # candidate id -> 0 for initial, 1 + parents' max

    # -- ask ---------------------------------------------------------------------------------
    def _ask(self) -> Proposal | None:
        if len(self._archive) + len(self._initial_pending) < self.archive_size:
            k = self._num_initial
            if k < len(self._seeds):
                return Proposal(self._seeds[k], info={"origin": "seed", "seed_index": k, "generation": 0})
            return Proposal(self.rng.random(self.dimension), info={"origin": "random", "generation": 0})
        if len(self._archive) < 2:
            return None  # wait for results; no state touched
        scores = self._matrix()
        i = sample_index(self.rng, competition_fitness(scores, self.alpha, self.epsilon))
        others = np.arange(len(self._archive)) != i
        pull = attraction(scores, i, self.epsilon) if self.use_attraction else np.ones(len(self._archive))
        j = int(np.flatnonzero(others)[sample_index(self.rng, pull[others])])
        split = int(self.rng.integers(0, self.dimension))
        w = float(self.rng.random())
        id1, id2 = self._archive[i], self._archive[j]
        child = crossover(self.candidate(id1).array, self.candidate(id2).array, split, w)
        if self.mutation_std > 0:
            child = np.clip(child + self.rng.normal(0.0, self.mutation_std, self.dimension), 0.0, 1.0)
        generation = 1 + max(self._generations[id1], self._generations[id2])
        info = {"origin": "child", "split": split, "w": w, "generation": generation}
        return Proposal(child, parents=(id1, id2), info=info)

    def _on_asked(self, candidate: Candidate, proposal: Proposal) -> None:
        self._generations[candidate.id] = int(proposal.info["generation"])
        if proposal.info.get("origin") in ("seed", "random"):
            self._num_initial += 1
            self._initial_pending.add(candidate.id)

    # -- tell --------------------------------------------------------------------------------
    def _check_result(self, result: Result) -> None:
        layout, vector = self._flatten(result)
        if self._layout is not None and layout != self._layout:
            raise ValueError(
                f"m2n2: per-sample scores must keep one layout (task: count) across results; "
                f"expected {dict(self._layout)}, got {dict(layout)}"
            )
        if vector.min() < 0:
            raise ValueError("m2n2: per-sample scores must be non-negative (accuracy-like)")

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        self._initial_pending.discard(candidate.id)
        if result.failed:
            return  # failures never enter the archive
        layout, vector = self._flatten(result)
        self._layout = layout
        self._archive.append(candidate.id)
        self._scores[candidate.id] = vector
        self._fitness[candidate.id] = float(result.fitness)
        if len(self._archive) > self.archive_size:
            drop = self._archive.pop(least_fit(self._matrix(), self.alpha, self.epsilon))
            del self._scores[drop]
            self._num_dropped += 1

    # -- helpers -----------------------------------------------------------------------------
    def _flatten(self, result: Result) -> tuple[tuple[tuple[str, int], ...], np.ndarray]:
        samples = result.samples if result.samples else {"<fitness>": [result.fitness]}
        tasks = sorted(samples)
        layout = tuple((t, len(samples[t])) for t in tasks)
        vector = np.concatenate([np.asarray(samples[t], dtype=np.float64) for t in tasks]) if tasks else np.zeros(0)
        if vector.size == 0:
            raise ValueError("m2n2: a result needs at least one per-sample score")
        return layout, vector

    def _matrix(self) -> np.ndarray:
        return np.stack([self._scores[m] for m in self._archive])

    @property
    def archive(self) -> tuple[str, ...]:
        """Member ids, in order of entry."""
        return tuple(self._archive)

    def _state(self) -> dict[str, Any]:
        members = []
        if self._archive:
            f = competition_fitness(self._matrix(), self.alpha, self.epsilon)
            for member, fit in zip(self._archive, f):
                members.append({
                    "id": member,
                    "competition_fitness": float(fit),
                    "fitness": self._fitness[member],
                    "parents": list(self.candidate(member).parents),
                    "genome": list(self.candidate(member).genome),
                })
        return {
            "archive_size": self.archive_size,
            "alpha": self.alpha,
            "attraction": self.use_attraction,
            "layout": [list(x) for x in self._layout] if self._layout else None,
            "num_dropped": self._num_dropped,
            "archive": members,
        }
