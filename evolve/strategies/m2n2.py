"""M2N2 over recipe genomes: *Competition and Attraction Improve Model Fusion* (Sakana AI, 2025).

https://arxiv.org/abs/2508.16204, reference code SakanaAI/natural_niches. A steady-state
archive of genomes (default 20), each with its per-sample validation scores ``s_ij``
(``Result.samples``, tasks in sorted order, concatenated).

- Sample weights ``c_j = weight(task of j) / items(task of j)`` (``task_weights``, default 1):
  the fitness is ``sum_t weight_t * mean_t``, so ``c`` makes competition see what fitness sees.
  ``c`` multiplies a sample's *reward*, not its share: ``z_j`` stays the plain column sum, so
  with ``alpha = 0`` the competition fitness is the fitness (over ``1 + eps``).
- Competition fitness: ``f_i = sum_j c_j s_ij / (z_j**alpha + eps)``, ``z_j = sum_k s_kj``.
- Parent 1 is drawn proportionally to ``f``. Parent 2 is drawn proportionally to the
  attraction ``g(A, B) = sum_j c_j max(s_Bj - s_Aj, 0) / (z_j + eps)`` over the other members
  (uniformly among them when nobody attracts); with attraction off it is drawn, like parent 1,
  proportionally to ``f``, independently and with replacement, so it may be parent 1 itself
  (whose child is then parent 1 again).
- Child: a split point and a mix ratio ``w ~ U(0, 1)``; coordinates before the split take
  ``SLERP_w(p1, p2)``, the rest ``SLERP_{1-w}``. Split points lie on block boundaries, drawn
  uniformly among the block starts, 0 included (split 0 is a whole-model ``SLERP_{1-w}``; with
  ``split`` off every coordinate takes ``SLERP_w``). A block is a (layer group, tensor kind)
  slice of the genome (``split_on: block``, the default; `GenomeLayout.block_starts`) or a
  whole layer group (``split_on: group``; `GenomeLayout.split_points`); either way both sides
  hold whole blocks, never part of a block's models. The paper splits the model's ordered
  parameters (layers, and within a layer attention before MLP), so set a fine
  ``space.layer_groups`` (one group per layer) for its meaning. Without kinds the two are the
  same; with one group and no kinds the split is always 0. Why blocks by default: a space
  with kinds exists to give tensor kinds different values, and group-only splits can never
  give two kinds of one group different parents (`benchmarks/README.md` §3.4 measures both). See
  `slerp_values` for the angle: over the weight values, or, given ``gram`` (task-vector inner
  products), exactly that of the merged task vectors.
- Replacement: a successful child joins; when the archive is over capacity, the member with
  the lowest competition fitness (recomputed with the child) is dropped; among tied least-fit
  members the OLDEST goes (the reference's argmin picks the first row), so the child wins ties.

Mutation (``mutation_std``, default 0): Gaussian noise of that standard deviation in genome
units (each coordinate's bounds span [0, 1]) added to the child after crossover, clipped. The
reference mutates only when it starts from scratch, never from pre-trained seeds, hence the
default. Over recipe genomes crossover only interpolates archive members (SLERP overshoots a
little), so where every parent scores 0 on the target (the zoo's kind pair) the parents are
never drawn (competition fitness 0, nothing to attract), the archive fills with one seed's
lineage and the search stalls near its best interpolation (~0.4 there); ``mutation_std: 0.2``
lets it climb (`benchmarks/README.md` §3.12).

Draw order per child (part of the contract; tests replay it): parent 1, parent 2, split
(unless ``split`` is off), ``w``, then the mutation noise (if ``mutation_std > 0``).

Seeding and scheduling (asynchronous, no generation barrier): the seeds (``seeds=``, by default
the source models and uniform merges, see `evolve.seeds`) are asked first and enter the
archive when told; breeding starts as soon as two members exist, as the reference does. Only
when fewer than two members exist or are in flight are random genomes asked (to start at all);
``random_fill`` instead fills the archive with random genomes up to ``archive_size`` first.
Failures never enter the archive.

Presets (``preset``): ``m2n2`` (alpha 1, attraction, split), and the paper's ablations ``ga``
(alpha 0 and attraction off), ``no_split``, ``no_attraction``. An explicit ``alpha``,
``attraction`` or ``split`` that contradicts the preset is refused.

Scores must be non-negative (accuracies, 0/1 hits): a shared reward ``s / z`` means nothing
otherwise. ``score_transform: minmax`` rescales each task's scores to [0, 1] by the smallest and
largest score seen on that task so far (the archive is re-scored as they move). With ``none``,
a result holding a negative score is kept out of the archive (recorded in ``state()["rejected"]``,
one warning), never a crash mid-run; `check_samples_nonnegative` is the pre-flight check.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evolve.strategies.base import Candidate, Proposal, Result, Strategy
from search_spaces.errors import UserError

EPSILON = 1e-8
SLERP_PARALLEL = 1e-6
"""Below this sin(angle) (or for a zero vector) SLERP falls back to linear interpolation."""
WEIGHT_PARAMETERS = frozenset({"weight"})
"""Per-model parameters that scale a model's task vector: the ones the SLERP angle is taken over."""
FITNESS_TASK = "<fitness>"
"""The one "sample" of a result without per-sample scores: its fitness."""

ScoreTransform = Literal["none", "minmax"]
SplitOn = Literal["block", "group"]


@dataclass(frozen=True)
class Preset:
    alpha: float
    attraction: bool
    split: bool


PRESETS: dict[str, Preset] = {
    "m2n2": Preset(alpha=1.0, attraction=True, split=True),
    "ga": Preset(alpha=0.0, attraction=False, split=True),
    "no_split": Preset(alpha=1.0, attraction=True, split=False),
    "no_attraction": Preset(alpha=1.0, attraction=False, split=True),
}


@dataclass(frozen=True)
class GenomeLayout:
    """What crossover needs to know about the genome, torch-free.

    ``split_points``: the first coordinate of each layer group, 0 first; ``block_starts``: the
    first coordinate of each (layer group, tensor kind) block, a superset (empty: the same as
    ``split_points``); a split falls on one or the other, by ``split_on``. ``weight_mask``:
    coordinates that are merge weights (enter the SLERP angle). ``lower``/``upper``: each
    coordinate's value bounds (genome x maps to ``lower + x * (upper - lower)``).
    """

    split_points: tuple[int, ...]
    weight_mask: tuple[bool, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    block_starts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        d = len(self.weight_mask)
        if not (len(self.lower) == len(self.upper) == d) or d == 0:
            raise ValueError("GenomeLayout: weight_mask, lower and upper need one entry per coordinate")
        if not self.split_points or self.split_points[0] != 0 or list(self.split_points) != sorted(set(self.split_points)) \
                or self.split_points[-1] >= d:
            raise ValueError("GenomeLayout.split_points: increasing coordinates, starting at 0, below the dimension")
        if self.block_starts and (not set(self.split_points) <= set(self.block_starts)
                                  or list(self.block_starts) != sorted(set(self.block_starts))
                                  or self.block_starts[-1] >= d):
            raise ValueError("GenomeLayout.block_starts: increasing coordinates below the dimension, "
                             "every split point among them")

    def points(self, split_on: SplitOn) -> tuple[int, ...]:
        """Where a split may fall: block starts or group starts."""
        return (self.block_starts or self.split_points) if split_on == "block" else self.split_points

    @property
    def dimension(self) -> int:
        return len(self.weight_mask)

    @classmethod
    def flat(cls, dimension: int) -> GenomeLayout:
        """No space known: every coordinate a group of its own, a weight in [0, 1]."""
        return cls(tuple(range(dimension)), (True,) * dimension, (0.0,) * dimension, (1.0,) * dimension)

    @classmethod
    def from_space(cls, space: Any) -> GenomeLayout:
        """Group and block starts, weight coordinates and bounds of a `ParameterSpace` (group-major layout).

        Any other space (a data-flow genome) gets the `flat` layout: splits anywhere, no bounds.
        """
        from search_spaces.parameter_space import ParameterSpace

        if not isinstance(space, ParameterSpace):
            return cls.flat(space.dimension)
        coords = space.coordinates
        starts = tuple(c.index for k, c in enumerate(coords) if k == 0 or c.group != coords[k - 1].group)
        blocks = tuple(c.index for k, c in enumerate(coords)
                       if k == 0 or (c.group, c.kind) != (coords[k - 1].group, coords[k - 1].kind))
        mask = tuple(bool(c.model) and c.parameter in WEIGHT_PARAMETERS for c in coords)
        return cls(starts, mask, tuple(c.lower for c in coords), tuple(c.upper for c in coords), blocks)


# -- the pieces, as pure functions ------------------------------------------------------------------
def _weights(scores: np.ndarray, sample_weights: np.ndarray | None) -> np.ndarray:
    return np.ones(scores.shape[1]) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)


def competition_fitness(
    scores: np.ndarray, alpha: float = 1.0, eps: float = EPSILON, sample_weights: np.ndarray | None = None
) -> np.ndarray:
    """``f_i = sum_j c_j s_ij / (z_j**alpha + eps)`` for a (members, samples) score matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    z = scores.sum(axis=0)
    return (_weights(scores, sample_weights) * scores / (z**alpha + eps)).sum(axis=1)


def attraction(
    scores: np.ndarray, a: int, eps: float = EPSILON, sample_weights: np.ndarray | None = None
) -> np.ndarray:
    """``g(A, B) = sum_j c_j max(s_Bj - s_Aj, 0) / (z_j + eps)`` for ``A = scores[a]`` and every B."""
    scores = np.asarray(scores, dtype=np.float64)
    z = scores.sum(axis=0)
    return (_weights(scores, sample_weights) * np.maximum(scores - scores[a], 0.0) / (z + eps)).sum(axis=1)


def slerp(w: float | np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spherical interpolation from ``a`` (w = 0) to ``b`` (w = 1); ``w`` may be per coordinate.

    The angle is that between the directions of the whole vectors; the vectors' own lengths
    are interpolated along. Nearly parallel or zero vectors interpolate linearly.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return slerp_values(w, a, b, np.ones(a.shape, dtype=bool))


def slerp_values(
    w: float | np.ndarray, a: np.ndarray, b: np.ndarray, angle_mask: np.ndarray, gram: np.ndarray | None = None
) -> np.ndarray:
    """SLERP of two parents' parameter *values*, the angle taken over the merge weights only.

    Why this angle: M2N2 SLERPs model parameters. A task-arithmetic merge is
    ``theta(w) = base + sum_b sum_m w_bm tau_bm`` (``b`` a (layer group, kind) block, ``tau_bm``
    model m's task vector on that block's tensors), so two parents' merged task vectors have
    ``cos Omega = w_A' G w_B / sqrt(w_A' G w_A * w_B' G w_B)`` with ``G`` the Gram matrix of the
    ``tau_bm`` (block-diagonal: blocks share no tensors), and SLERP of the task vectors *is* the
    same SLERP of the weight vectors (theta is linear in w). ``gram`` (over the masked
    coordinates, genome order; `gram_over_weights` builds it) gives that angle exactly, when the
    driver can measure the task vectors; without it ``G = I`` (task vectors of equal norm,
    mutually orthogonal: fine-tunes of one base nearly are): the angle between the weight values.
    Densities, ``lambda`` and other non-weight coordinates are not directions of a vector: they
    stay out of the angle and are interpolated linearly with the same ratio. ``angle_mask``
    marks the weight coordinates; with none, or nearly parallel or zero weight vectors,
    everything is linear.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), a.shape)
    mask = np.asarray(angle_mask, dtype=bool)
    out = (1.0 - w) * a + w * b
    if mask.any():
        aw, bw = a[mask], b[mask]
        g = np.eye(aw.size) if gram is None else np.asarray(gram, dtype=np.float64)
        na, nb = math.sqrt(max(aw @ g @ aw, 0.0)), math.sqrt(max(bw @ g @ bw, 0.0))
        if na > 0 and nb > 0:
            omega = float(np.arccos(np.clip((aw @ g @ bw) / (na * nb), -1.0, 1.0)))
            sin_omega = math.sin(omega)
            if sin_omega > SLERP_PARALLEL:
                t = w[mask]
                out[mask] = (np.sin((1.0 - t) * omega) * aw + np.sin(t * omega) * bw) / sin_omega
    return out


def gram_over_weights(space: Any, blocks: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """The Gram matrix over a `ParameterSpace`'s weight coordinates, from one per block.

    ``blocks[k]``: the (models x models) inner products ``<tau_m, tau_n>`` of the task vectors
    restricted to the tensors of the k-th (layer group, kind) block, blocks in genome order
    (group, then kind slot). Measuring them needs the weights (workers); this only assembles.
    """
    layout = GenomeLayout.from_space(space)
    index = [i for i, weight in enumerate(layout.weight_mask) if weight]
    coords = [space.coordinates[i] for i in index]
    keys = list(dict.fromkeys((c.group, c.kind) for c in coords))
    if len(blocks) != len(keys):
        raise UserError(f"m2n2.gram: {len(blocks)} blocks given, the space has {len(keys)} (layer group, kind) blocks")
    models = list(space.models)
    out = np.zeros((len(index), len(index)))
    for k, key in enumerate(keys):
        g = np.asarray(blocks[k], dtype=np.float64)
        if g.shape != (len(models), len(models)):
            raise UserError(f"m2n2.gram[{k}]: must be {len(models)} x {len(models)}, got shape {g.shape}")
        rows = [(p, models.index(c.model)) for p, c in enumerate(coords) if (c.group, c.kind) == key]
        for p, m in rows:
            for q, n in rows:
                out[p, q] = g[m, n]
    return out


def crossover(
    p1: np.ndarray, p2: np.ndarray, split: int, w: float, layout: GenomeLayout | None = None,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """The M2N2 child genome: ratio ``w`` on coordinates ``< split``, ``1 - w`` on the rest.

    Genomes are mapped to parameter values through ``layout``'s bounds, mixed by
    `slerp_values`, mapped back and clipped into [0, 1] (SLERP may overshoot a bound).
    """
    p1 = np.asarray(p1, dtype=np.float64)
    p2 = np.asarray(p2, dtype=np.float64)
    layout = layout or GenomeLayout.flat(p1.shape[0])
    lower, upper = np.asarray(layout.lower), np.asarray(layout.upper)
    width = upper - lower
    ratio = np.where(np.arange(p1.shape[0]) < split, w, 1.0 - w)
    values = slerp_values(ratio, lower + p1 * width, lower + p2 * width, np.asarray(layout.weight_mask), gram)
    return np.clip((values - lower) / width, 0.0, 1.0)


def sample_index(rng: np.random.Generator, weights: np.ndarray) -> int:
    """An index drawn proportionally to non-negative ``weights`` (uniformly if they sum to 0)."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    p = weights / total if total > 0 else np.full(weights.shape, 1.0 / weights.size)
    return int(rng.choice(weights.size, p=p))


def least_fit(
    scores: np.ndarray, alpha: float = 1.0, eps: float = EPSILON, sample_weights: np.ndarray | None = None
) -> int:
    """The member replacement drops: lowest competition fitness; among ties, the oldest (first row)."""
    return int(np.argmin(competition_fitness(scores, alpha, eps, sample_weights)))


def check_samples_nonnegative(samples: Mapping[str, Sequence[float]] | None, where: str = "m2n2") -> None:
    """Pre-flight: a one-line `UserError` naming the first task with a negative per-sample score."""
    for task in sorted(samples or {}):
        values = np.asarray(samples[task], dtype=np.float64)
        if values.size and values.min() < 0:
            raise UserError(
                f"{where}: task '{task}' gives negative per-sample scores (min {values.min():g}); M2N2 shares "
                "each sample's reward and needs scores >= 0: use an accuracy-like metric, or set "
                "strategy.settings.score_transform: minmax"
            )


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
        preset: str = "m2n2",
        alpha: float | None = None,
        attraction: bool | None = None,
        split: bool | None = None,
        split_on: SplitOn = "block",
        random_fill: bool = False,
        mutation_std: float = 0.0,
        epsilon: float = EPSILON,
        score_transform: ScoreTransform = "none",
        failure_fitness: float | None = None,
        seeds: Sequence[Sequence[float]] = (),
        task_weights: Mapping[str, float] | None = None,
        layout: GenomeLayout | None = None,
        gram: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__(dimension, seed, failure_fitness=failure_fitness, seeds=seeds)
        if not isinstance(archive_size, int) or isinstance(archive_size, bool) or archive_size < 2:
            raise UserError(f"m2n2.archive_size: must be an integer >= 2, got {archive_size!r}")
        if preset not in PRESETS:
            raise UserError(f"m2n2.preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        chosen = PRESETS[preset]
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha):
            raise UserError(f"m2n2.alpha: must be a number >= 0 (1 = competition, 0 = plain GA), got {alpha!r}")
        for key, given in (("alpha", alpha), ("attraction", attraction), ("split", split)):
            if given is not None and given != getattr(chosen, key) and preset != "m2n2":
                raise UserError(f"m2n2.{key}: {given!r} contradicts preset '{preset}' ({key} = {getattr(chosen, key)!r})")
        if split_on not in ("block", "group"):
            raise UserError(f"m2n2.split_on: must be 'block' or 'group', got {split_on!r}")
        if not isinstance(mutation_std, int | float) or not 0 <= mutation_std:
            raise UserError(f"m2n2.mutation_std: must be >= 0, got {mutation_std!r}")
        if not isinstance(epsilon, int | float) or not 0 < epsilon:
            raise UserError(f"m2n2.epsilon: must be > 0, got {epsilon!r}")
        if score_transform not in ("none", "minmax"):
            raise UserError(f"m2n2.score_transform: must be 'none' or 'minmax', got {score_transform!r}")
        weights = dict(task_weights or {})
        for task, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
                raise UserError(f"m2n2: task '{task}' has weight {weight!r}; M2N2 needs task weights >= 0")
        if layout is not None and layout.dimension != dimension:
            raise UserError(f"m2n2.layout: {layout.dimension} coordinates, but the genome has {dimension}")
        self.archive_size = archive_size
        self.preset = preset
        self.alpha = float(chosen.alpha if alpha is None else alpha)
        self.use_attraction = bool(chosen.attraction if attraction is None else attraction)
        self.use_split = bool(chosen.split if split is None else split)
        self.split_on = split_on
        self.random_fill = bool(random_fill)
        self.mutation_std = float(mutation_std)
        self.epsilon = float(epsilon)
        self.score_transform = score_transform
        self.needs_nonnegative_samples = score_transform == "none"  # minmax takes any scores
        self.task_weights = weights
        self.layout = layout or GenomeLayout.flat(dimension)
        self.gram = None if gram is None else self._checked_gram(gram)
        self._initial_pending: set[str] = set()  # seeds and random starters in flight
        self._archive: list[str] = []        # member ids, in order of entry
        self._raw: dict[str, np.ndarray] = {}  # member id -> untransformed sample scores
        self._fitness: dict[str, float] = {}
        self._layout: tuple[tuple[str, int], ...] | None = None
        self._sample_weights: np.ndarray | None = None
        self._task_of: np.ndarray | None = None  # sample -> task index
        self._starts: np.ndarray | None = None   # task -> its first sample
        self._low: np.ndarray | None = None     # per task: smallest / largest score seen (minmax)
        self._high: np.ndarray | None = None
        self._num_dropped = 0
        self._rejected: list[dict[str, str]] = []
        self._generations: dict[str, int] = {}  # candidate id -> 0 for initial, 1 + parents' max

    # -- ask ---------------------------------------------------------------------------------
    def _ask(self) -> Proposal | None:
        members, starting = len(self._archive), len(self._initial_pending)
        if self.random_fill and members + starting < self.archive_size:
            return self._random()
        if members < 2:
            return self._random() if members + starting < 2 else None  # None: wait, no state touched
        scores, c = self._matrix(), self._sample_weights
        f = competition_fitness(scores, self.alpha, self.epsilon, c)
        i = sample_index(self.rng, f)
        if self.use_attraction:
            others = np.flatnonzero(np.arange(members) != i)
            j = int(others[sample_index(self.rng, attraction(scores, i, self.epsilon, c)[others])])
        else:
            j = sample_index(self.rng, f)  # with replacement, like parent 1
        points = self.layout.points(self.split_on)
        split = int(points[self.rng.integers(0, len(points))]) if self.use_split else self.dimension
        w = float(self.rng.random())
        id1, id2 = self._archive[i], self._archive[j]
        child = crossover(self.candidate(id1).array, self.candidate(id2).array, split, w, self.layout, self.gram)
        if self.mutation_std > 0:
            child = np.clip(child + self.rng.normal(0.0, self.mutation_std, self.dimension), 0.0, 1.0)
        generation = 1 + max(self._generations[id1], self._generations[id2])
        info = {"origin": "child", "split": split, "w": w, "generation": generation}
        return Proposal(child, parents=(id1, id2), info=info)

    def _checked_gram(self, gram: Sequence[Sequence[float]]) -> np.ndarray:
        k = sum(self.layout.weight_mask)
        try:
            g = np.asarray(gram, dtype=np.float64)
        except (TypeError, ValueError):
            g = np.full(0, np.nan)
        if g.shape != (k, k) or not np.all(np.isfinite(g)) or not np.allclose(g, g.T) or np.any(np.diag(g) < 0):
            raise UserError(f"m2n2.gram: must be a symmetric {k} x {k} matrix of task-vector inner products over "
                            "the weight coordinates (see m2n2.gram_over_weights)")
        return g

    def _random(self) -> Proposal:
        return Proposal(self.rng.random(self.dimension), info={"origin": "random", "generation": 0})

    def _on_asked(self, candidate: Candidate, proposal: Proposal) -> None:
        self._generations[candidate.id] = int(proposal.info.get("generation", 0))
        if proposal.info.get("origin") in ("seed", "random"):
            self._initial_pending.add(candidate.id)

    # -- tell --------------------------------------------------------------------------------
    def _check_result(self, result: Result) -> None:
        layout, _ = self._flatten(result)
        if self._layout is not None and layout != self._layout:
            raise ValueError(
                f"m2n2: per-sample scores must keep one layout (task: count) across results; "
                f"expected {dict(self._layout)}, got {dict(layout)}"
            )

    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        self._initial_pending.discard(candidate.id)
        if result.failed:
            return  # failures never enter the archive
        layout, raw = self._flatten(result)
        if self._layout is None:
            self._set_layout(layout)
        if self.score_transform == "none" and raw.min() < 0:
            task = self._layout[int(self._task_of[int(np.argmin(raw))])][0]
            message = (f"task '{task}' gave a negative per-sample score ({raw.min():g}); kept out of the archive "
                       "(set strategy.settings.score_transform: minmax)")
            if not self._rejected:
                warnings.warn(f"m2n2: candidate {candidate.id}: {message}", stacklevel=3)
            self._rejected.append({"id": candidate.id, "error": message})
            return
        low = np.minimum.reduceat(raw, self._starts)
        high = np.maximum.reduceat(raw, self._starts)
        self._low = low if self._low is None else np.minimum(self._low, low)
        self._high = high if self._high is None else np.maximum(self._high, high)
        self._archive.append(candidate.id)
        self._raw[candidate.id] = raw
        self._fitness[candidate.id] = float(result.fitness)
        if len(self._archive) > self.archive_size:
            drop = self._archive.pop(least_fit(self._matrix(), self.alpha, self.epsilon, self._sample_weights))
            del self._raw[drop]
            self._num_dropped += 1

    # -- helpers -----------------------------------------------------------------------------
    def _flatten(self, result: Result) -> tuple[tuple[tuple[str, int], ...], np.ndarray]:
        samples = result.samples if result.samples else {FITNESS_TASK: [result.fitness]}
        tasks = sorted(samples)
        layout = tuple((t, len(samples[t])) for t in tasks)
        if any(n == 0 for _, n in layout):
            raise ValueError(f"m2n2: task '{next(t for t, n in layout if n == 0)}' has no per-sample scores")
        return layout, np.concatenate([np.asarray(samples[t], dtype=np.float64) for t in tasks])

    def _set_layout(self, layout: tuple[tuple[str, int], ...]) -> None:
        self._layout = layout
        counts = np.array([n for _, n in layout])
        self._task_of = np.repeat(np.arange(len(layout)), counts)
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        per_task = np.array([self.task_weights.get(t, 1.0) / n for t, n in layout])
        self._sample_weights = per_task[self._task_of]

    def _matrix(self) -> np.ndarray:
        """The archive's scores as competition sees them (after ``score_transform``)."""
        raw = np.stack([self._raw[m] for m in self._archive])
        if self.score_transform == "minmax":
            low, span = self._low[self._task_of], (self._high - self._low)[self._task_of]
            return np.where(span > 0, (raw - low) / np.where(span > 0, span, 1.0), 0.0)
        return raw

    @property
    def archive(self) -> tuple[str, ...]:
        """Member ids, in order of entry."""
        return tuple(self._archive)

    @property
    def best_member(self) -> tuple[Candidate, float] | None:
        """The fittest member now in the archive (oldest on ties); `best` is the best ever told."""
        if not self._archive:
            return None
        member = max(self._archive, key=lambda m: self._fitness[m])  # max keeps the first of ties
        return self.candidate(member), self._fitness[member]

    def _state(self) -> dict[str, Any]:
        members = []
        if self._archive:
            f = competition_fitness(self._matrix(), self.alpha, self.epsilon, self._sample_weights)
            for member, fit in zip(self._archive, f):
                members.append({
                    "id": member,
                    "competition_fitness": float(fit),
                    "fitness": self._fitness[member],
                    "parents": list(self.candidate(member).parents),
                    "genome": list(self.candidate(member).genome),
                })
        best = self.best_member
        return {
            "archive_size": self.archive_size,
            "preset": self.preset,
            "alpha": self.alpha,
            "attraction": self.use_attraction,
            "split": self.use_split,
            "split_on": self.split_on,
            "gram": self.gram is not None,
            "random_fill": self.random_fill,
            "score_transform": self.score_transform,
            "task_weights": dict(self.task_weights),
            "layout": [list(x) for x in self._layout] if self._layout else None,
            "num_dropped": self._num_dropped,
            "rejected": list(self._rejected),
            "best_member": None if best is None else
            {"id": best[0].id, "fitness": best[1], "genome": list(best[0].genome)},
            "archive": members,
        }
