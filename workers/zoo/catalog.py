"""Every ``zoo:NAME`` model: where it lives and which build makes it.

Zoo v1 (`workers.zoo.build`) holds the base and the three experts. The derived builds
(`workers.zoo.derived`) train more models from its base, each made only when a run names one
of its models: the data-flow pair (`zoo:reader`, `zoo:adder`) and the kind pair
(`zoo:kind_reader`, `zoo:kind_adder`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from workers.zoo.build import MODEL_NAMES, build_zoo, default_zoo_dir, is_built
from workers.zoo.data_flow_pair import DATA_FLOW_PAIR
from workers.zoo.derived import DerivedBuild
from workers.zoo.kind_pair import KIND_PAIR
from workers.zoo.train import LAYERS

DERIVED: tuple[DerivedBuild, ...] = (DATA_FLOW_PAIR, KIND_PAIR)
ZOO_MODEL_NAMES: tuple[str, ...] = MODEL_NAMES + tuple(m for b in DERIVED for m in b.models)
_DEPTHS = {**dict.fromkeys(ZOO_MODEL_NAMES, LAYERS), "reader": LAYERS + 1}


def _build_of(name: str) -> DerivedBuild | None:
    return next((b for b in DERIVED if name in b.models), None)


def model_dir(name: str, zoo_root: Path | None = None) -> Path:
    """Where zoo model ``name`` is (or will be once built)."""
    root = (zoo_root or default_zoo_dir()).absolute()
    build = _build_of(name)
    if build is not None:
        return build.model_dirs(root)[name]
    if name in MODEL_NAMES:
        return root / "models" / name
    raise KeyError(name)


def model_depth(name: str) -> int:
    """Layers of zoo model ``name``, known before it is built."""
    return _DEPTHS[name]


def tensor_names(name: str) -> list[str]:
    """Tensor names of zoo model ``name``, known before it is built: its architecture
    (`workers.zoo.train.model_config`) laid out on the meta device, no weights allocated."""
    import torch
    from transformers import LlamaForCausalLM

    from workers.zoo.train import model_config

    config = model_config()
    config.num_hidden_layers = model_depth(name)
    with torch.device("meta"):
        return list(LlamaForCausalLM(config).state_dict())


def models_built(names: Iterable[str], zoo_root: Path | None = None) -> bool:
    root = (zoo_root or default_zoo_dir()).absolute()
    builds = {b for b in map(_build_of, names) if b is not None}
    return is_built(root) and all(b.is_built(root) for b in builds)


def build_models(names: Iterable[str], progress: bool = True) -> None:
    """Build what the named zoo models need: zoo v1 always, a derived build when named."""
    zoo = build_zoo(progress=progress)
    for build in DERIVED:
        if set(names) & set(build.models):
            build.build(zoo.root, progress=progress)
