"""The declarative merge recipe: what to merge, how, and with which parameter values.

A `Recipe` is frozen, hashable and JSON-serialisable, so identical candidates are never
scored twice and every candidate can be stored and reproduced. The YAML form is a superset
of mergekit's: a mergekit config for one of our methods parses as-is.

    merge_method: dare_ties
    base_model: zoo/base
    models:
      - model: zoo/arith
        parameters: {weight: 0.6, density: {groups: [0.3, 0.5, 0.7, 0.9]}}
      - model: zoo/cipher
        parameters: {weight: [0.2, 0.8], density: 0.5}
    parameters: {lambda: 1.0, normalize: true}
    dtype: float32
    seed: 0

Layer stacking (mergekit's ``slices``) is written as
``slices: [{sources: [{model: m, layer_range: [0, 4]}]}, ...]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import RecipeError
from search_spaces.values import check_value

DTYPES = ("float32", "float16", "bfloat16")
_TOP_LEVEL_KEYS = {
    "merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
    "seed", "tokenizer_source", "name",
}


def canonical_json(data: Mapping[str, Any]) -> str:
    """The one canonical JSON form of a recipe mapping: the same recipe, the same string."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def recipe_hash(data: Mapping[str, Any]) -> str:
    """The one recipe hash (of `canonical_json`): what makes two candidates the same."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


class FrozenDict(Mapping):
    """An immutable, hashable mapping whose values are deep-frozen JSON data."""

    __slots__ = ("_items", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._items = {k: _freeze(v) for k, v in sorted((data or {}).items())}
        self._hash = None

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Frozen recipe data back to plain JSON data (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelEntry:
    """One input model and its per-model parameter values."""

    model: str
    parameters: FrozenDict = field(default_factory=FrozenDict)
    layer_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Slice:
    """A run of output layers taken (and merged) from the same-length layer ranges of its sources."""

    sources: tuple[ModelEntry, ...]

    @property
    def num_layers(self) -> int:
        start, end = self.sources[0].layer_range
        return end - start


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelEntry, ...] = ()
    slices: tuple[Slice, ...] = ()
    base_model: str | None = None
    parameters: FrozenDict = field(default_factory=FrozenDict)
    dtype: str | None = None
    seed: int = 0
    tokenizer_source: str | None = None

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model is not None:
            out["base_model"] = self.base_model
        if self.models:
            out["models"] = [_entry_to_dict(m) for m in self.models]
        if self.slices:
            out["slices"] = [{"sources": [_entry_to_dict(s) for s in sl.sources]} for sl in self.slices]
        if self.parameters:
            out["parameters"] = thaw(self.parameters)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        out["seed"] = self.seed
        if self.tokenizer_source is not None:
            out["tokenizer_source"] = self.tokenizer_source
        return out

    def to_json(self) -> str:
        """Canonical JSON: the same recipe always gives the same string."""
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        return recipe_hash(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- convenience ------------------------------------------------------------------------
    @property
    def model_paths(self) -> list[str]:
        """Every distinct model the recipe reads, base first."""
        seen: dict[str, None] = {}
        if self.base_model is not None:
            seen[self.base_model] = None
        for entry in self.models:
            seen[entry.model] = None
        for sl in self.slices:
            for src in sl.sources:
                seen[src.model] = None
        return list(seen)

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Validate plain data (ours or mergekit's) into a Recipe; errors name the field."""
        return _parse(data, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: recipe file not found")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(f"{where}: malformed {'JSON' if path.suffix == '.json' else 'YAML'}: {problem}") from None
        recipe = _parse(data, str(path))
        return recipe.resolve_paths(path.parent)

    def resolve_paths(self, root: Path) -> Recipe:
        """Make relative model paths absolute against ``root`` (the recipe file's folder)."""

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            candidate = Path(p).expanduser()
            if not candidate.is_absolute():
                candidate = (root / candidate)
            return str(candidate.resolve()) if candidate.exists() else p

        def fix_entry(e: ModelEntry) -> ModelEntry:
            return ModelEntry(fix(e.model), e.parameters, e.layer_range)

        return Recipe(
            merge_method=self.merge_method,
            models=tuple(fix_entry(m) for m in self.models),
            slices=tuple(Slice(tuple(fix_entry(s) for s in sl.sources)) for sl in self.slices),
            base_model=fix(self.base_model),
            parameters=self.parameters,
            dtype=self.dtype,
            seed=self.seed,
            tokenizer_source=fix(self.tokenizer_source),
        )


def _entry_to_dict(entry: ModelEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"model": entry.model}
    if entry.layer_range is not None:
        out["layer_range"] = list(entry.layer_range)
    if entry.parameters:
        out["parameters"] = thaw(entry.parameters)
    return out


def _parse(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with at least 'merge_method'")
    unknown = set(data) - _TOP_LEVEL_KEYS
    if unknown:
        raise RecipeError(f"{source}: unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(_TOP_LEVEL_KEYS))})")
    method = data.get("merge_method")
    if not isinstance(method, str) or not method:
        raise RecipeError(f"{source}: merge_method: required, a method name such as 'ties'")

    base = data.get("base_model")
    if base is not None and not isinstance(base, str):
        raise RecipeError(f"{source}: base_model: must be a path or model name")
    parameters = _parse_parameters(data.get("parameters"), f"{source}: parameters")

    models = tuple(_parse_entry(m, f"{source}: models[{i}]", need_range=False)
                   for i, m in enumerate(data.get("models") or []))
    slices = tuple(_parse_slice(s, f"{source}: slices[{i}]") for i, s in enumerate(data.get("slices") or []))
    if models and slices:
        raise RecipeError(f"{source}: give either 'models' or 'slices', not both")
    if not models and not slices:
        raise RecipeError(f"{source}: models: at least one model is required")

    dtype = data.get("dtype", data.get("out_dtype"))
    if dtype is not None and dtype not in DTYPES:
        raise RecipeError(f"{source}: dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RecipeError(f"{source}: seed: must be a non-negative integer")
    tok = data.get("tokenizer_source")
    if tok is not None and not isinstance(tok, str):
        raise RecipeError(f"{source}: tokenizer_source: must be a model path (or 'base')")
    return Recipe(method, models, slices, base, parameters, dtype, seed, tok)


def _parse_parameters(raw: Any, where: str) -> FrozenDict:
    if raw is None:
        return FrozenDict()
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: must be a mapping of parameter name to value")
    for name, value in raw.items():
        check_value(value, f"{where}.{name}")
        if name == "density":
            _check_density(value, f"{where}.density")
    return FrozenDict(raw)


def _check_density(value: Any, where: str) -> None:
    """Density is a kept fraction: it must lie in (0, 1] wherever it appears in the value."""
    if isinstance(value, bool):
        raise RecipeError(f"{where}: must be a number in (0, 1], got {value}")
    if isinstance(value, int | float):
        if not 0 < value <= 1:
            raise RecipeError(f"{where}: {value} is outside (0, 1]")
    elif isinstance(value, dict):
        for i, g in enumerate(value["groups"]):
            _check_density(g, f"{where}.groups[{i}]")
    else:
        for i, v in enumerate(value):
            if isinstance(v, dict):
                _check_density(v["value"], f"{where}[{i}].value")
            else:
                _check_density(v, f"{where}[{i}]")


def _parse_entry(raw: Any, where: str, need_range: bool) -> ModelEntry:
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
        raise RecipeError(f"{where}.model: required, a path to a model directory")
    extra = set(raw) - {"model", "parameters", "layer_range"}
    if extra:
        raise RecipeError(f"{where}: unknown key '{sorted(extra)[0]}' (expected model, parameters, layer_range)")
    layer_range = raw.get("layer_range")
    if layer_range is not None:
        ok = (isinstance(layer_range, list | tuple) and len(layer_range) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) for x in layer_range)
              and 0 <= layer_range[0] < layer_range[1])
        if not ok:
            raise RecipeError(f"{where}.layer_range: must be [start, end] with 0 <= start < end")
        layer_range = (layer_range[0], layer_range[1])
    elif need_range:
        raise RecipeError(f"{where}.layer_range: required inside slices")
    params = _parse_parameters(raw.get("parameters"), f"{where}.parameters")
    return ModelEntry(raw["model"], params, layer_range)


def _parse_slice(raw: Any, where: str) -> Slice:
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise RecipeError(f"{where}.sources: required, a non-empty list of {{model, layer_range}}")
    sources = tuple(_parse_entry(s, f"{where}.sources[{i}]", need_range=True) for i, s in enumerate(raw["sources"]))
    lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
    if len(lengths) != 1:
        raise RecipeError(f"{where}.sources: every layer_range in a slice must have the same length")
    return Slice(sources)
