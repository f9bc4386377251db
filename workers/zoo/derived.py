"""Builds of models trained from zoo v1's base, each cached like the zoo itself.

A `DerivedBuild` names its models and says how each is trained (`phases`, and `prepare` for a
model whose shape differs from the base's). It is built into ``<zoo>/<name>-v<version>/``:
``models/<model>/`` HF directories, ``<name>.json`` (a manifest with quick target scores) and
a marker written last. The marker records the version and a fingerprint of the recipe module
and of zoo v1's generator, so a zoo rebuilt by other code rebuilds what derives from it; a
file lock serialises builders. `workers.zoo.catalog` lists the builds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.zoo import data as D


def _unchanged(name: str, model: Any) -> Any:
    return model


@dataclass(frozen=True)
class DerivedBuild:
    name: str                   # the directory stem ("dfs" -> <zoo>/dfs-v1)
    version: int
    models: tuple[str, ...]
    recipe_file: Path           # the module whose text decides the models (fingerprinted)
    phases: Callable[[frozenset[str], float], dict[str, list[Any]]]  # (held-out prompts, scale) -> Phases
    prepare: Callable[[str, Any], Any] = _unchanged  # (model name, the base loaded) -> the model to train
    target: str = "zoo_target"  # the task the manifest's quick score reads

    def directory(self, zoo_root: Path) -> Path:
        return Path(zoo_root) / f"{self.name}-v{self.version}"

    @property
    def marker(self) -> str:
        return f"{self.name.upper()}_COMPLETE"

    def model_dirs(self, zoo_root: Path) -> dict[str, Path]:
        return {m: self.directory(zoo_root) / "models" / m for m in self.models}

    def fingerprint(self) -> str:
        from workers.zoo.build import generator_fingerprint

        h = hashlib.sha256(Path(self.recipe_file).read_bytes())
        h.update(generator_fingerprint().encode())
        return h.hexdigest()[:16]

    def is_built(self, zoo_root: Path) -> bool:
        try:
            info = json.loads((self.directory(zoo_root) / self.marker).read_text())
        except (OSError, ValueError):
            return False
        return info.get("version") == self.version and info.get("fingerprint") == self.fingerprint()

    def build(self, zoo_root: Path, progress: bool = True, *, train_scale: float = 1.0) -> dict[str, Path]:
        """Train the models from ``zoo_root``'s base unless built; {model: directory}.

        ``zoo_root`` must hold a finished zoo. Any ``train_scale`` but 1 builds untrained
        models for plumbing tests and writes no marker."""
        from workers.zoo.build import _lock, _threads, build_threads

        paths = self.model_dirs(zoo_root)
        if train_scale == 1.0 and self.is_built(zoo_root):
            return paths
        with _lock(self.directory(zoo_root)):
            if train_scale == 1.0 and self.is_built(zoo_root):
                return paths
            with _threads(build_threads()):
                self._build(Path(zoo_root), progress, train_scale)
        return paths

    def _build(self, zoo_root: Path, progress: bool, train_scale: float) -> None:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        from workers.zoo.build import _progress, _save_model
        from workers.zoo.tokenizer import build_tokenizer
        from workers.zoo.train import greedy_accuracy, train

        hf_logging.disable_progress_bar()
        root = self.directory(zoo_root)
        root.mkdir(parents=True, exist_ok=True)
        (root / self.marker).unlink(missing_ok=True)
        t0 = time.time()
        splits = D.all_splits()
        todo = self.phases(D.held_out_prompts(splits), train_scale)
        tokenizer = build_tokenizer()
        losses, models = {}, {}
        with _progress(progress) as bars:
            for name in self.models:
                model = self.prepare(name, AutoModelForCausalLM.from_pretrained(zoo_root / "models" / "base",
                                                                                dtype="float32"))
                for phase in todo[name]:
                    bar = bars.add_task(f"train {phase.name}", total=phase.steps, info="")
                    curve = train(model, phase, progress=lambda step, _bar=bar: bars.update(_bar, completed=step + 1))
                    losses[phase.name] = round(sum(curve[-20:]) / min(20, len(curve)), 4)
                    bars.update(bar, info=f"loss {losses[phase.name]:.4f}")
                _save_model(model, tokenizer, root / "models" / name)
                models[name] = model
        target = splits[self.target]["test"][: None if train_scale == 1.0 else 8]
        manifest = {
            "version": self.version,
            "models": {n: f"models/{n}" for n in self.models},
            f"quick_{self.target}_test": {n: round(greedy_accuracy(m, target), 4) for n, m in models.items()},
            "final_train_loss": losses,
            "build_seconds": round(time.time() - t0, 1),
            "train_scale": train_scale,
        }
        (root / f"{self.name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if train_scale == 1.0:
            (root / self.marker).write_text(json.dumps({"version": self.version, "fingerprint": self.fingerprint(),
                                                        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
