"""The data-flow-space (DFS) genome codec: a vector in [0, 1]^d to and from a layer path.

After *Evolutionary Optimization of Model Merging Recipes* (Sakana AI, 2024): the layers of
models A and B (L_A and L_B, M = L_A + L_B in all) are laid out in order, A's then B's (or interleaved
A0 B0 A1 B1 ...), and that layout is repeated ``repeats`` times, giving T = M * repeats slots.
Slot t is on when its indicator I_t > 0; the path is the on slots in slot order. A scale
multiplies the input of each placed layer: ``W[i][j]`` when the path steps from layer i to
layer j (``scales: full``, an M x M matrix), one scale per slot (``per_slot``), or none.

Genome layout: the binary block (T indicators) comes first, then the continuous block
(scales); `blocks` names both so strategies can treat them differently.

- Indicators: coordinate x maps to I = lower + 2x. Slots on in the paper's starting genome
  (A's layers in the first repetition) have bounds [-0.5, 1.5], all others [-1.5, 0.5]; so
  the centre of the box (x = 0.5, where CMA-ES starts) *is* the starting genome, and a slot
  flips at distance 0.25 from it.
- Scales: log-linear on each half, ``lower`` at x = 0, 1 at x = 0.5, ``upper`` at x = 1, so
  the centre is the unscaled path.

A's first and last layers start and end the path (``fix_ends``) outside the searched slots.
At most ``max_path_length`` layers are placed: beyond it the slots with the largest
indicators win. The cumulative scale C (the product of the input scales so far) is clamped to
[1 / max_cumulative_scale, max_cumulative_scale] while decoding, so a long path of large
scales cannot push the folded weights (``workers.data_flow``) out of a sane range; the recipe
records the effective scales, so what is stored is exactly what is scored.

A decoded path is an ordinary `Recipe` (so the loop, store, resume and hashes need nothing
new): ``merge_method: data_flow``, A as ``base_model`` (embeddings, final norm, head,
config and tokenizer come from it), and one single-layer slice per step whose
``parameters.input_scale`` is the step's scale. `LayerPath` is its typed view.

Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePath
from typing import Any, Literal

import numpy as np

from search_spaces.errors import InvalidGenomeError, RecipeError, UserError
from search_spaces.parameter_space import check_genome
from search_spaces.recipe import DTYPES, Recipe

DATA_FLOW_METHOD = "data_flow"
SCALE_PARAM = "input_scale"
ScaleForm = Literal["full", "per_slot", "none"]
SlotOrder = Literal["sequential", "interleaved"]
SCALE_FORMS: tuple[str, ...] = ("full", "per_slot", "none")
SLOT_ORDERS: tuple[str, ...] = ("sequential", "interleaved")
_ON, _OFF = 0.5, -0.5  # the indicator values `encode` writes
_KEYS = ("model_a", "model_b", "num_layers", "num_layers_b", "repeats", "scales", "scale_range", "max_path_length",
         "fix_ends", "slot_order", "max_cumulative_scale", "dtype", "seed")


# -- the path ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathStep:
    """One placed layer: ``layer`` of ``model``, its input multiplied by ``scale``."""

    model: str
    layer: int
    scale: float = 1.0


@dataclass(frozen=True)
class LayerPath:
    """A typed, frozen view of a data-flow recipe; `to_recipe` / `from_recipe` convert."""

    model_a: str  # embeddings, final norm, LM head, config and tokenizer come from A
    steps: tuple[PathStep, ...]
    dtype: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            raise RecipeError("data_flow: a layer path needs at least one step")
        for k, s in enumerate(self.steps):
            if not isinstance(s.layer, int) or isinstance(s.layer, bool) or s.layer < 0:
                raise RecipeError(f"data_flow: steps[{k}].layer: must be a layer index >= 0, got {s.layer!r}")
            if not _is_number(s.scale) or not math.isfinite(s.scale) or s.scale <= 0:
                raise RecipeError(f"data_flow: steps[{k}].{SCALE_PARAM}: must be a finite number > 0, got {s.scale!r}")

    def to_recipe(self) -> Recipe:
        slices = [{"sources": [{"model": s.model, "layer_range": [s.layer, s.layer + 1],
                                "parameters": {SCALE_PARAM: float(s.scale)}}]} for s in self.steps]
        data: dict[str, Any] = {"merge_method": DATA_FLOW_METHOD, "base_model": self.model_a,
                                "slices": slices, "seed": self.seed}
        if self.dtype is not None:
            data["dtype"] = self.dtype
        return Recipe.from_dict(data, source="layer path")

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> LayerPath:
        """The path a data-flow recipe describes; `RecipeError` naming the field otherwise."""
        if recipe.merge_method != DATA_FLOW_METHOD:
            raise RecipeError(f"merge_method: '{recipe.merge_method}' is not a layer path ('{DATA_FLOW_METHOD}')")
        if recipe.base_model is None:
            raise RecipeError("base_model: a layer path names model A (embeddings, head, tokenizer) as base_model")
        if recipe.models or not recipe.slices:
            raise RecipeError("slices: a layer path lists its steps as single-layer 'slices', not 'models'")
        if recipe.parameters:
            raise RecipeError(f"parameters: a layer path has no global parameters, got {sorted(recipe.parameters)}")
        if recipe.tokenizer_source not in (None, "base", recipe.base_model):
            raise RecipeError("tokenizer_source: a layer path takes model A's tokenizer (base_model)")
        steps = []
        for k, sl in enumerate(recipe.slices):
            where = f"slices[{k}]"
            if len(sl.sources) != 1 or sl.num_layers != 1:
                raise RecipeError(f"{where}: a layer-path step is one source with a one-layer layer_range")
            src = sl.sources[0]
            extra = sorted(set(src.parameters) - {SCALE_PARAM})
            if extra:
                raise RecipeError(f"{where}.sources[0].parameters.{extra[0]}: not a layer-path parameter "
                                  f"(only {SCALE_PARAM})")
            scale = src.parameters.get(SCALE_PARAM, 1.0)
            if not _is_number(scale):
                raise RecipeError(f"{where}.sources[0].parameters.{SCALE_PARAM}: must be a number, got {scale!r}")
            steps.append(PathStep(src.model, src.layer_range[0], float(scale)))
        return cls(recipe.base_model, tuple(steps), recipe.dtype, recipe.seed)

    @property
    def length(self) -> int:
        return len(self.steps)

    @property
    def models(self) -> tuple[str, ...]:
        """A first, then every other model a step reads."""
        seen = {self.model_a: None}
        for s in self.steps:
            seen[s.model] = None
        return tuple(seen)

    def cumulative_scales(self) -> tuple[float, ...]:
        """C_{k+1} = s_k * C_k with C_0 = 1: the residual stream's scale after each step's input scale."""
        out, c = [], 1.0
        for s in self.steps:
            c *= s.scale
            out.append(c)
        return tuple(out)

    def draw(self, names: Mapping[str, str] | None = None) -> str:
        """The path as a text table: position, source model, layer, input scale, cumulative scale."""
        names = dict(names or {})
        for i, m in enumerate(self.models):
            names.setdefault(m, "A" if m == self.model_a else (PurePath(m).name or m))
        rows = [f"{'slot':>4}  {'model':<12} {'layer':>5}  {'scale':>7}  {'cumulative':>10}"]
        for k, (s, c) in enumerate(zip(self.steps, self.cumulative_scales())):
            rows.append(f"{k:>4}  {names[s.model][:12]:<12} {s.layer:>5}  {s.scale:>7.4f}  {c:>10.4f}")
        return "\n".join(rows)


def is_data_flow(recipe: Recipe) -> bool:
    return recipe.merge_method == DATA_FLOW_METHOD


def clamp_cumulative(scales: Sequence[float], bound: float) -> list[float]:
    """Effective scales whose running product stays in [1/bound, bound].

    Each clamped step moves the cumulative scale only as far as the bound, so an effective
    scale lies between 1 and the requested one (inside any scale range that holds 1).
    """
    out, c = [], 1.0
    lo, hi = 1.0 / bound, bound
    for s in scales:
        nxt = min(max(c * s, lo), hi)
        out.append(s if nxt == c * s else nxt / c)
        c = nxt
    return out


# -- the space --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFlowCoordinate:
    """What one genome coordinate controls: ``block`` is "indicators" or "scales"."""

    index: int
    block: str
    label: str      # e.g. "I[r0:A.3]" or "W[A.3->B.4]" or "S[r1:B.0]"
    lower: float    # of the decoded value (indicator or scale)
    upper: float
    group: int = 0  # the slot's repetition (full W: one group after them), for crossover split points
    parameter: str = "indicator"  # or SCALE_PARAM: what generic tools (seeds, M2N2 layouts) read
    model: str = ""  # no coordinate is a per-model merge weight


@dataclass(frozen=True)
class DataFlowSpace:
    """Frozen description of one data-flow search; validates on construction (`UserError`)."""

    model_a: str
    model_b: str
    num_layers: int                      # L_A: model A's layers
    num_layers_b: int | None = None      # L_B: model B's layers (None: L_A); stacking may need more
    repeats: int = 3
    scales: str = "per_slot"
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_path_length: int | None = None   # None: L_A + L_B
    fix_ends: bool = True
    slot_order: str = "sequential"
    max_cumulative_scale: float = 16.0
    dtype: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        where = "data_flow"
        for name in ("model_a", "model_b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise UserError(f"{where}.{name}: required, a model path")
        if self.model_a == self.model_b:
            raise UserError(f"{where}.model_b: must differ from model_a ('{self.model_a}')")
        if self.num_layers_b is None:
            object.__setattr__(self, "num_layers_b", self.num_layers)
        for name, minimum in (("num_layers", 2 if self.fix_ends else 1), ("num_layers_b", 1), ("repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise UserError(f"{where}.{name}: must be an integer >= {minimum}, got {value!r}")
        if self.scales not in SCALE_FORMS:
            raise UserError(f"{where}.scales: '{self.scales}' is not one of {', '.join(SCALE_FORMS)}")
        if self.slot_order not in SLOT_ORDERS:
            raise UserError(f"{where}.slot_order: '{self.slot_order}' is not one of {', '.join(SLOT_ORDERS)}")
        rng = self.scale_range
        if (isinstance(rng, str) or not isinstance(rng, Sequence) or len(rng) != 2
                or not all(_is_number(v) and math.isfinite(v) for v in rng)):
            raise UserError(f"{where}.scale_range: must be [lower, upper], got {rng!r}")
        lo, hi = float(rng[0]), float(rng[1])
        if not 0 < lo < 1 < hi:
            raise UserError(f"{where}.scale_range: [{lo}, {hi}] must satisfy 0 < lower < 1 < upper "
                            "(1 is the unscaled centre of the box)")
        object.__setattr__(self, "scale_range", (lo, hi))
        bound = self.max_cumulative_scale
        if not _is_number(bound) or not math.isfinite(bound) or bound < hi:
            raise UserError(f"{where}.max_cumulative_scale: must be a number >= the upper scale {hi}, got {bound!r}")
        object.__setattr__(self, "max_cumulative_scale", float(bound))
        limit = self.max_path_length if self.max_path_length is not None else self.layers_per_repeat
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < self._fixed + 1:
            raise UserError(f"{where}.max_path_length: must be an integer >= {self._fixed + 1}, got {limit!r}")
        if limit > self.num_slots + self._fixed:
            raise UserError(f"{where}.max_path_length: {limit} exceeds the {self.num_slots} slots"
                            + (" plus the two fixed ends" if self.fix_ends else ""))
        object.__setattr__(self, "max_path_length", limit)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UserError(f"{where}.dtype: '{self.dtype}' is not one of {', '.join(DTYPES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"{where}.seed: must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, data: Any, source: str = "data_flow") -> DataFlowSpace:
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: must be a mapping with model_a, model_b and num_layers")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise UserError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(_KEYS)})")
        kwargs = dict(data)
        if "scale_range" in kwargs and isinstance(kwargs["scale_range"], list):
            kwargs["scale_range"] = tuple(kwargs["scale_range"])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise UserError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _KEYS}
        out["scale_range"] = list(self.scale_range)
        return {k: v for k, v in out.items() if v is not None}

    # -- layout -------------------------------------------------------------------------------
    @property
    def models(self) -> tuple[str, str]:
        return (self.model_a, self.model_b)

    @property
    def layers_per_repeat(self) -> int:
        """M = L_A + L_B: the layers of both models."""
        return self.num_layers + self.num_layers_b

    def depth(self, model: int) -> int:
        """Layers of model 0 (A) or 1 (B)."""
        return self.num_layers if model == 0 else self.num_layers_b

    @property
    def num_slots(self) -> int:
        """T = M * repeats."""
        return self.layers_per_repeat * self.repeats

    @property
    def _fixed(self) -> int:
        return 2 if self.fix_ends else 0

    @cached_property
    def layout(self) -> tuple[tuple[int, int], ...]:
        """(model index, layer) of each of the M layers of one repetition, in slot order."""
        if self.slot_order == "sequential":
            return tuple((m, i) for m in (0, 1) for i in range(self.depth(m)))
        return tuple((m, i) for i in range(max(self.num_layers, self.num_layers_b)) for m in (0, 1)
                     if i < self.depth(m))

    def slot(self, t: int) -> tuple[int, int, int]:
        """(repetition, model index, layer) of slot ``t``."""
        r, p = divmod(t, self.layers_per_repeat)
        return (r, *self.layout[p])

    def layer_id(self, model: int, layer: int) -> int:
        """Row/column of ``W`` for a layer: A's layers 0..L_A-1, then B's."""
        return layer + (self.num_layers if model else 0)

    def _layer_of_id(self, i: int) -> tuple[int, int]:
        return (0, i) if i < self.num_layers else (1, i - self.num_layers)

    @cached_property
    def _start_on(self) -> np.ndarray:
        """The paper's starting genome: A's layers on in the first repetition (but the fixed ends)."""
        on = np.zeros(self.num_slots, dtype=bool)
        for t in range(self.layers_per_repeat):
            r, m, layer = self.slot(t)
            inner = 0 < layer < self.num_layers - 1 if self.fix_ends else True
            on[t] = m == 0 and inner
        return on

    @property
    def num_scale_coordinates(self) -> int:
        if self.scales == "full":
            return self.layers_per_repeat ** 2
        if self.scales == "per_slot":
            return self.num_slots + (1 if self.fix_ends else 0)  # + the fixed last step's scale
        return 0

    @property
    def dimension(self) -> int:
        return self.num_slots + self.num_scale_coordinates

    @property
    def blocks(self) -> dict[str, range]:
        """Genome index ranges: the binary "indicators" block, then the continuous "scales" block."""
        return {"indicators": range(0, self.num_slots), "scales": range(self.num_slots, self.dimension)}

    @property
    def binary_indices(self) -> tuple[int, ...]:
        return tuple(self.blocks["indicators"])

    @property
    def continuous_indices(self) -> tuple[int, ...]:
        return tuple(self.blocks["scales"])

    @cached_property
    def coordinates(self) -> tuple[DataFlowCoordinate, ...]:
        name = ("A", "B")
        out = []
        for t in range(self.num_slots):
            r, m, layer = self.slot(t)
            lo = -0.5 if self._start_on[t] else -1.5
            out.append(DataFlowCoordinate(t, "indicators", f"I[r{r}:{name[m]}.{layer}]", lo, lo + 2.0, r))
        lo, hi = self.scale_range
        if self.scales == "full":
            for i in range(self.layers_per_repeat):
                for j in range(self.layers_per_repeat):
                    src, dst = self._layer_of_id(i), self._layer_of_id(j)
                    out.append(DataFlowCoordinate(len(out), "scales",
                                                  f"W[{name[src[0]]}.{src[1]}->{name[dst[0]]}.{dst[1]}]", lo, hi,
                                                  self.repeats, SCALE_PARAM))
        elif self.scales == "per_slot":
            for t in range(self.num_slots):
                r, m, layer = self.slot(t)
                out.append(DataFlowCoordinate(len(out), "scales", f"S[r{r}:{name[m]}.{layer}]", lo, hi, r, SCALE_PARAM))
            if self.fix_ends:
                out.append(DataFlowCoordinate(len(out), "scales", f"S[end:A.{self.num_layers - 1}]", lo, hi,
                                              self.repeats - 1, SCALE_PARAM))
        return tuple(out)

    @cached_property
    def _indicator_lower(self) -> np.ndarray:
        return np.where(self._start_on, -0.5, -1.5)

    def start_genome(self) -> np.ndarray:
        """The paper's starting genome, which is the centre of the box: model A, unscaled."""
        return np.full(self.dimension, 0.5)

    def naive_paths(self) -> tuple[tuple[str, LayerPath], ...]:
        """The unscaled paths a user would try first, those the space can encode, in this order:
        each parent (``parent:``; with ``fix_ends`` B's layers sit inside A's fixed ends), then
        the two stacks, A's layers before B's and B's before A's (``stack:``)."""
        a = [(0, i) for i in range(self.num_layers)]
        b = [(1, i) for i in range(self.num_layers_b)]
        inner_a = a[1:-1] if self.fix_ends else a
        names = [PurePath(m).name or m for m in self.models]
        wanted = [(f"parent:{names[0]}", inner_a), (f"parent:{names[1]}", b),
                  (f"stack:{names[0]}+{names[1]}", inner_a + b), (f"stack:{names[1]}+{names[0]}", b + inner_a)]
        out = []
        for label, inner in wanted:
            placed = [a[0], *inner, a[-1]] if self.fix_ends else inner
            path = LayerPath(self.model_a, tuple(PathStep(self.models[m], i) for m, i in placed), self.dtype, self.seed)
            try:
                self.encode(path)
            except RecipeError:  # too long for max_path_length, or beyond the repetitions
                continue
            out.append((label, path))
        return tuple(out)

    # -- codec --------------------------------------------------------------------------------
    def indicators(self, x: Any) -> np.ndarray:
        return self._indicators(self._check_genome(x))

    def _indicators(self, x: np.ndarray) -> np.ndarray:
        return self._indicator_lower + 2.0 * x[: self.num_slots]

    def _scale_values(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.scale_range
        u = x[self.num_slots:]
        return np.where(u < 0.5, np.exp(math.log(lo) * (1.0 - 2.0 * u)), np.exp(math.log(hi) * (2.0 * u - 1.0)))

    def _scale_coordinate(self, s: float) -> float:
        lo, hi = self.scale_range
        u = (1.0 - math.log(s) / math.log(lo)) / 2.0 if s < 1 else (1.0 + math.log(s) / math.log(hi)) / 2.0
        return min(max(u, 0.0), 1.0)

    def selected_slots(self, x: Any) -> tuple[int, ...]:
        """The on slots that make the path, in slot order, after the path-length bound."""
        return self._selected(self._indicators(self._check_genome(x)))

    def _selected(self, ind: np.ndarray) -> tuple[int, ...]:
        on = np.flatnonzero(ind > 0)
        room = self.max_path_length - self._fixed
        if on.size > room:  # the largest indicators win; ties go to the earlier slot
            order = sorted(on.tolist(), key=lambda t: (-ind[t], t))
            on = np.array(sorted(order[:room]))
        if on.size == 0 and not self.fix_ends:
            on = np.array([int(np.argmax(ind))])  # a path needs at least one layer
        return tuple(int(t) for t in on)

    def decode_path(self, x: Any) -> LayerPath:
        x = self._check_genome(x)
        chosen = self._selected(self._indicators(x))
        scale_values = self._scale_values(x)
        placed = [self.slot(t)[1:] for t in chosen]
        if self.fix_ends:
            placed = [(0, 0), *placed, (0, self.num_layers - 1)]
        scales: list[float] = []
        for k, (m, layer) in enumerate(placed):
            if self.scales == "none" or k == 0:
                scales.append(1.0)  # the first step reads the embeddings: nothing to scale
            elif self.scales == "full":
                i = self.layer_id(*placed[k - 1])
                scales.append(float(scale_values[i * self.layers_per_repeat + self.layer_id(m, layer)]))
            else:
                last = self.fix_ends and k == len(placed) - 1
                t = self.num_slots if last else chosen[k - (1 if self.fix_ends else 0)]
                scales.append(float(scale_values[t]))
        scales = clamp_cumulative(scales, self.max_cumulative_scale)
        steps = tuple(PathStep(self.models[m], layer, s) for (m, layer), s in zip(placed, scales))
        return LayerPath(self.model_a, steps, self.dtype, self.seed)

    def decode(self, x: Any) -> Recipe:
        """The recipe for genome ``x``; raises `InvalidGenomeError`, never returns None."""
        try:
            return self.decode_path(x).to_recipe()
        except RecipeError as exc:  # the space validated itself, so this is a bug
            raise InvalidGenomeError(f"genome decodes to an invalid layer path: {exc}") from exc

    def encode(self, recipe: Recipe | LayerPath) -> np.ndarray:
        """A genome that decodes to ``recipe`` (many do; this one sets each used coordinate
        and leaves the rest at the centre). `RecipeError` names what the space cannot express."""
        path = recipe if isinstance(recipe, LayerPath) else LayerPath.from_recipe(recipe)
        if path.model_a != self.model_a:
            raise RecipeError(f"base_model: '{path.model_a}', but the space's model A is '{self.model_a}'")
        index = {m: i for i, m in enumerate(self.models)}
        placed = []
        for k, s in enumerate(path.steps):
            if s.model not in index:
                raise RecipeError(f"slices[{k}]: model '{s.model}' is neither A nor B of the space")
            if s.layer >= self.depth(index[s.model]):
                raise RecipeError(f"slices[{k}]: layer {s.layer}, but '{s.model}' has {self.depth(index[s.model])}")
            placed.append((index[s.model], s.layer))
        if path.length > self.max_path_length:
            raise RecipeError(f"slices: {path.length} steps, above max_path_length {self.max_path_length}")
        inner = placed
        if self.fix_ends:
            if len(placed) < 2 or placed[0] != (0, 0) or placed[-1] != (0, self.num_layers - 1):
                raise RecipeError("slices: with fix_ends the path must start with A's first layer and end "
                                  "with A's last")
            inner = placed[1:-1]
        slots, t = [], 0
        for k, want in enumerate(inner):  # earliest match of the steps, in slot order
            while t < self.num_slots and self.slot(t)[1:] != want:
                t += 1
            if t == self.num_slots:
                raise RecipeError(f"slices: the path does not fit the {self.repeats} repetitions of the slot layout")
            slots.append(t)
            t += 1
        x = np.full(self.dimension, 0.5)
        target = np.full(self.num_slots, _OFF)
        target[slots] = _ON
        x[: self.num_slots] = (target - self._indicator_lower) / 2.0
        scales = [s.scale for s in path.steps]
        if scales[0] != 1.0:
            raise RecipeError(f"slices[0].sources[0].parameters.{SCALE_PARAM}: the first step reads the "
                              f"embeddings; the space keeps its scale at 1, got {scales[0]}")
        if self.scales == "none":
            if any(s != 1.0 for s in scales):
                raise RecipeError("slices: the space searches no scales, but the path has some")
        lo, hi = self.scale_range
        for k, s in enumerate(scales[1:], start=1):
            if not lo <= s <= hi:
                raise RecipeError(f"slices[{k}].sources[0].parameters.{SCALE_PARAM}: {s} is outside "
                                  f"the scale range [{lo}, {hi}]")
        if self.scales != "none":
            positions: dict[int, float] = {}
            for k in range(1, len(placed)):
                if self.scales == "full":
                    c = self.layer_id(*placed[k - 1]) * self.layers_per_repeat + self.layer_id(*placed[k])
                elif self.fix_ends and k == len(placed) - 1:
                    c = self.num_slots
                else:
                    c = slots[k - (1 if self.fix_ends else 0)]
                if c in positions and positions[c] != scales[k]:
                    raise RecipeError(f"slices[{k}]: the step {self.coordinates[self.num_slots + c].label} "
                                      "appears twice with different scales; the full W cannot express it")
                positions[c] = scales[k]
            for c, s in positions.items():
                x[self.num_slots + c] = self._scale_coordinate(s)
            x = self._nudge(x, positions)
        if self._cumulative_clamped(scales):
            raise RecipeError(f"slices: the cumulative scale leaves [1/{self.max_cumulative_scale:g}, "
                              f"{self.max_cumulative_scale:g}]")
        return x

    def _cumulative_clamped(self, scales: Sequence[float]) -> bool:
        c, b = 1.0, self.max_cumulative_scale
        for s in scales:
            c *= s
            if not 1 / b * (1 - 1e-12) <= c <= b * (1 + 1e-12):
                return True
        return False

    def _nudge(self, x: np.ndarray, positions: Mapping[int, float]) -> np.ndarray:
        """Move scale coordinates by ulps until they decode to exactly the recorded values."""
        for c, s in positions.items():
            i = self.num_slots + c
            for _ in range(16):
                v = float(self._scale_values(x)[c])
                if v == s:
                    break
                x[i] = min(max(np.nextafter(x[i], 2.0 if v < s else -1.0), 0.0), 1.0)
        return x

    def describe(self, x: Any) -> dict[str, float]:
        """Each coordinate's label and decoded value (indicator or scale), in genome order."""
        x = self._check_genome(x)
        values = np.concatenate([self._indicators(x), self._scale_values(x)])
        return {c.label: float(v) for c, v in zip(self.coordinates, values)}

    def _check_genome(self, x: Any) -> np.ndarray:
        return check_genome(x, self.dimension, [c.label for c in self.coordinates])


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
