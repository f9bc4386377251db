"""Every ``zoo:NAME`` model: where it lives and which build makes it.

Zoo v1 (`workers.zoo.build`) holds the base and the three experts; the data-flow pair
(`workers.zoo.data_flow_pair`) is a second cached build on top of it, made only when a run
names one of its models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from workers.zoo.build import MODEL_NAMES, build_zoo, default_zoo_dir, is_built
from workers.zoo.data_flow_pair import PAIR_NAMES, build_pair, is_pair_built, pair_dir
from workers.zoo.train import LAYERS

ZOO_MODEL_NAMES: tuple[str, ...] = MODEL_NAMES + PAIR_NAMES
_DEPTHS = {**dict.fromkeys(MODEL_NAMES, LAYERS), "reader": LAYERS + 1, "adder": LAYERS}


def model_dir(name: str, zoo_root: Path | None = None) -> Path:
    """Where zoo model ``name`` is (or will be once built)."""
    root = (zoo_root or default_zoo_dir()).absolute()
    if name in PAIR_NAMES:
        return pair_dir(root) / "models" / name
    if name in MODEL_NAMES:
        return root / "models" / name
    raise KeyError(name)


def model_depth(name: str) -> int:
    """Layers of zoo model ``name``, known before it is built."""
    return _DEPTHS[name]


def models_built(names: Iterable[str], zoo_root: Path | None = None) -> bool:
    root = (zoo_root or default_zoo_dir()).absolute()
    names = set(names)
    return is_built(root) and (not names & set(PAIR_NAMES) or is_pair_built(root))


def build_models(names: Iterable[str], progress: bool = True) -> None:
    """Build what the named zoo models need: zoo v1 always, the data-flow pair when named."""
    zoo = build_zoo(progress=progress)
    if set(names) & set(PAIR_NAMES):
        build_pair(zoo.root, progress=progress)
