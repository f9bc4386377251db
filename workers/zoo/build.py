"""Build (and cache) the embedded model zoo.

Layout of a built zoo (``ZOO_VERSION`` = 1)::

    zoo-v1/
      models/{base,arith,cipher,distractor}/   HF directories (safetensors, float32)
      tasks/zoo_*.yaml, tasks/zoo_*/{validation,test}.jsonl
      zoo.json                                   manifest (recipes, quick scores, timings)
      ZOO_COMPLETE                               written last; its presence means "built"
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.zoo import data as D
from workers.zoo import recipe
from workers.zoo.tokenizer import build_tokenizer, save_tokenizer

ZOO_VERSION = 1
MARKER = "ZOO_COMPLETE"
MODEL_NAMES = ("base", "arith", "cipher", "distractor")
EXPERTS = ("arith", "cipher", "distractor")
TARGET_TASK = "zoo_target"
SKILL_TASKS = {"arith": "zoo_arith", "cipher": "zoo_cipher", "distractor": "zoo_distractor"}
THREADS = 1

# The hand-set reference merges (task arithmetic over the base; see workers.zoo.merge).
# "handset" is the one the docs and the slow test hold to the "merging matters" bar.
HAND_MERGES: dict[str, dict] = {
    "handset": {"arith": 1.0, "cipher": 1.0},
    "handset_soft": {"arith": 0.85, "cipher": 1.0},
    "uniform_half": {"arith": 0.5, "cipher": 0.5},
    "all_three": {"arith": 1.0, "cipher": 1.0, "distractor": 1.0},
}


def default_zoo_dir() -> Path:
    env = os.environ.get("EVOLVE_ZOO_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "evolve-merge" / f"zoo-v{ZOO_VERSION}"


@dataclass(frozen=True)
class ZooTasks:
    """What lm-eval needs: ``TaskManager(include_path=str(include_path))`` and task names."""

    include_path: Path
    test: tuple[str, ...] = tuple(t.name for t in D.EVAL_TASKS)
    validation: tuple[str, ...] = tuple(t.name + "_val" for t in D.EVAL_TASKS)
    target: str = TARGET_TASK
    skills: dict[str, str] = field(default_factory=lambda: dict(SKILL_TASKS))

    def names(self, split: str = "test") -> list[str]:
        if split not in D.SPLITS:
            raise ValueError(f"split must be one of {D.SPLITS}, got {split!r}")
        return list(self.test if split == "test" else self.validation)


@dataclass(frozen=True)
class Zoo:
    root: Path

    @property
    def models(self) -> dict[str, Path]:
        return {name: self.root / "models" / name for name in MODEL_NAMES}

    @property
    def base(self) -> Path:
        return self.models["base"]

    @property
    def experts(self) -> dict[str, Path]:
        return {name: self.models[name] for name in EXPERTS}

    @property
    def tasks(self) -> ZooTasks:
        return ZooTasks(include_path=self.root / "tasks")

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "zoo.json").read_text())

    def is_complete(self) -> bool:
        return is_built(self.root)


def zoo_tasks(directory: str | os.PathLike | None = None) -> ZooTasks:
    """Include path and task names of a built zoo (``directory`` defaults as for build_zoo)."""
    root = Path(directory) if directory is not None else default_zoo_dir()
    return Zoo(root).tasks


def generator_fingerprint() -> str:
    """Hash of the modules that determine the zoo's content (not of this orchestration module).
    Stored in the marker, so a cache built by different generator code is rebuilt even if
    ZOO_VERSION was not bumped."""
    import hashlib

    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("tokenizer.py", "data.py", "train.py", "recipe.py"):
        h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def is_built(directory: str | os.PathLike, train_scale: float = 1.0) -> bool:
    """True when ``directory`` holds a finished zoo of this ZOO_VERSION, generator and scale."""
    marker = Path(directory) / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("version") == ZOO_VERSION
        and info.get("generator") == generator_fingerprint()
        and info.get("train_scale", 1.0) == train_scale
    )


@contextlib.contextmanager
def _lock(directory: Path):
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f".{directory.name}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_threads() -> int:
    """Torch threads for the build: ``$EVOLVE_ZOO_THREADS`` if set, else ``THREADS`` (1).

    One thread, because (a) the thread count changes the floating-point summation order and
    so the exact bits of the trained weights (the outcome, not the bits, is what the recipe
    guarantees), and a fixed count keeps rebuilds byte-identical; and (b) oversubscribed
    OpenMP threads spin: with other work on the 2 cores, 2 threads ran a training step ~10x
    slower than 1. On an idle 2-core machine 2 threads are ~1.5x faster."""
    env = os.environ.get("EVOLVE_ZOO_THREADS")
    return max(1, int(env)) if env else THREADS


@contextlib.contextmanager
def _threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _fix_moved_tasks(root: Path) -> None:
    """A zoo copied or moved elsewhere keeps working: the task YAMLs name their data files by
    absolute path (lm-eval resolves relative ones against the working directory)."""
    tasks = root / "tasks"
    if tasks.is_dir() and not D.task_yamls_point_into(tasks):
        with _lock(root):
            if not D.task_yamls_point_into(tasks):
                D.write_task_yamls(tasks)


def _clear_partial(root: Path) -> None:
    """Remove what an interrupted build may have left; never touches anything else."""
    for name in ("models", "tasks"):
        shutil.rmtree(root / name, ignore_errors=True)
    for name in ("zoo.json", MARKER):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()


def _save_model(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.save_pretrained(path, safe_serialization=True)
    save_tokenizer(tokenizer, path)
    for f in path.iterdir():  # safetensors writes 0600; a cache should be readable
        f.chmod(0o644)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def build_zoo(
    directory: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
    *,
    train_scale: float = 1.0,
) -> Zoo:
    """Build the zoo into ``directory`` (default :func:`default_zoo_dir`) unless it is
    already built there. Deterministic: fixed seeds, fixed thread count. Returns the Zoo.

    ``train_scale`` multiplies every training step count; anything but 1.0 builds a
    throw-away zoo with untrained models (for fast tests of the plumbing)."""
    root = Path(directory).expanduser() if directory is not None else default_zoo_dir()
    root = root.absolute()
    if not force and is_built(root, train_scale):
        _fix_moved_tasks(root)
        return Zoo(root)
    with _lock(root):
        if not force and is_built(root, train_scale):  # a concurrent caller built it
            return Zoo(root)
        with _threads(build_threads()):
            _build(root, progress, train_scale)
    return Zoo(root)


def _build(root: Path, progress: bool, train_scale: float = 1.0) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rich shows progress; no tqdm bar per saved shard

    from workers.zoo.merge import task_arithmetic
    from workers.zoo.train import greedy_accuracy, new_model, train

    t_start = time.time()
    root.mkdir(parents=True, exist_ok=True)
    _clear_partial(root)
    timings: dict[str, float] = {}

    splits = D.all_splits()
    exclude = D.held_out_prompts(splits)
    D.write_tasks(root / "tasks", splits)
    tokenizer = build_tokenizer()
    phases = recipe.phases(exclude, train_scale)

    states: dict[str, dict[str, torch.Tensor]] = {}
    losses: dict[str, float] = {}
    with _progress(progress) as bars:
        ids = {
            name: bars.add_task(f"train {name}", total=ph.steps, info="")
            for name, _, ph in phases
        }
        eval_bar = bars.add_task("check merges", total=len(MODEL_NAMES) + len(HAND_MERGES), info="")
        for name, parent, phase in phases:
            t0 = time.time()
            if parent is None:
                model = new_model(recipe.SEED)
            else:
                model = new_model(recipe.SEED)
                model.load_state_dict(states[parent])
            bar = ids[name]

            def tick(step: int, _bar=bar, _phase=phase) -> None:
                bars.update(_bar, completed=step + 1)

            curve = train(model, phase, progress=tick)
            losses[name] = sum(curve[-20:]) / min(20, len(curve))
            bars.update(bar, info=f"loss {losses[name]:.4f}")
            states[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            _save_model(model, tokenizer, root / "models" / name)
            timings[name] = round(time.time() - t0, 1)

        # Quick self-check with the direct greedy evaluator (same decisions as lm-eval).
        t0 = time.time()
        n_check = None if train_scale == 1.0 else 8  # tiny test zoos: a token check only
        tests = {t.name: splits[t.name]["test"][:n_check] for t in D.EVAL_TASKS}
        scores: dict[str, dict[str, float]] = {}
        probe = new_model(recipe.SEED)

        def score(state) -> dict[str, float]:
            probe.load_state_dict(state)
            return {t: round(greedy_accuracy(probe, ex), 4) for t, ex in tests.items()}

        for name in MODEL_NAMES:
            scores[name] = score(states[name])
            bars.advance(eval_bar)
        experts = {n: states[n] for n in EXPERTS}
        for mname, weights in HAND_MERGES.items():
            scores[mname] = score(task_arithmetic(states["base"], experts, weights))
            bars.advance(eval_bar)
        timings["check"] = round(time.time() - t0, 1)

    timings["total"] = round(time.time() - t_start, 1)
    manifest = {
        "version": ZOO_VERSION,
        "models": {n: f"models/{n}" for n in MODEL_NAMES},
        "base": "base",
        "experts": list(EXPERTS),
        "tasks": {
            "include_path": "tasks",
            "test": list(ZooTasks(root / "tasks").test),
            "validation": list(ZooTasks(root / "tasks").validation),
            "target": TARGET_TASK,
            "skills": SKILL_TASKS,
        },
        "hand_merges": {
            k: {"method": "task_arithmetic", "base": "base", "weights": v}
            for k, v in HAND_MERGES.items()
        },
        "quick_scores_test": scores,
        "final_train_loss": losses,
        "build_seconds": timings,
        "torch_threads": torch.get_num_threads(),
        "train_scale": train_scale,
    }
    (root / "zoo.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / MARKER).write_text(
        json.dumps(
            {
                "version": ZOO_VERSION,
                "generator": generator_fingerprint(),
                "train_scale": train_scale,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        + "\n"
    )
