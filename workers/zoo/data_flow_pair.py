"""The zoo's data-flow pair: two models on which a layer *path* beats both parents and every
parameter-space merge on ``zoo_target`` (the design study is in docs/zoo.md).

- ``reader`` (model A): zoo v1's base with one extra block in front (5 layers). The block
  starts as an exact identity (zeroed output projections) and is the only thing trained, to
  turn kana into what the base's first block expects.
- ``adder`` (model B): zoo v1's base with every block fine-tuned on two-digit addition, with
  embedding noise so its blocks accept a foreign block in front.

Neither reads kana *and* adds, and a same-shape merge has no slot for the reader's extra
block; the stacked path ``reader.0, adder.0-3, reader.4`` does both.

Built from a finished zoo v1 (its base and its tasks) into ``<zoo>/dfs-v{DFS_VERSION}``,
cached like the zoo: a marker written last records the version and a fingerprint of this
file and of the zoo's generator, so a zoo rebuilt by other code rebuilds the pair.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from workers.zoo import data as D

DFS_VERSION = 1
DFS_MARKER = "DFS_COMPLETE"
PAIR_NAMES = ("reader", "adder")
SEED = 4321
READER_STEPS, READER_LR = 400, 3e-3
ADDER_STEPS, ADDER_LR, ADDER_NOISE = 1000, 3e-3, 0.7
# The stacked path the design was made for (model, layer); docs/zoo.md has its scores.
DESIGNED_PATH = (("reader", 0), ("adder", 0), ("adder", 1), ("adder", 2), ("adder", 3), ("reader", 4))


def pair_dir(zoo_root: Path) -> Path:
    return Path(zoo_root) / f"dfs-v{DFS_VERSION}"


def fingerprint() -> str:
    from workers.zoo.build import generator_fingerprint

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(generator_fingerprint().encode())
    return h.hexdigest()[:16]


def is_pair_built(zoo_root: Path) -> bool:
    try:
        info = json.loads((pair_dir(zoo_root) / DFS_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == DFS_VERSION and info.get("fingerprint") == fingerprint()


def phases(exclude: frozenset[str], scale: float = 1.0) -> dict[str, object]:
    """{model: Phase}: what each model of the pair trains, from zoo v1's base."""
    from workers.zoo.train import Phase

    cipher = [(D.read_kana_short, 0.3), (D.read_mixed, 0.3), (D.add_single_kana, 0.2), (D.add_single_mixed, 0.2)]
    replay = [(g, w * 0.2) for g, w in [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]]

    def steps(n: int) -> int:
        return max(1, round(n * scale))

    return {
        # Only the new front block (layer 0 once inserted) trains.
        "reader": Phase("reader", D.Mixture([*cipher, *replay], SEED + 8, exclude), steps(READER_STEPS),
                        READER_LR, trainable=lambda n: ".layers.0." in n, seed=SEED + 108,
                        warmup=min(50, steps(READER_STEPS))),
        "adder": Phase("adder", D.Mixture([(D.add_any, 0.8), *replay], SEED + 6, exclude), steps(ADDER_STEPS),
                       ADDER_LR, trainable=lambda n: ".layers." in n or "norm" in n, embedding_noise=ADDER_NOISE,
                       seed=SEED + 106, warmup=min(50, steps(ADDER_STEPS))),
    }


def with_prefix_block(model):
    """``model`` with one more block in front: a copy of its layer 0 whose branch outputs are
    zeroed, so the block is an exact identity until trained."""
    import copy

    import torch

    block = copy.deepcopy(model.model.layers[0])
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    model.model.layers.insert(0, block)
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    model.config.num_hidden_layers += 1
    return model


def build_pair(zoo_root: Path, progress: bool = True, *, train_scale: float = 1.0) -> dict[str, Path]:
    """Train the pair into ``pair_dir(zoo_root)`` unless it is built; {name: model dir}.

    ``zoo_root`` must hold a finished zoo (`workers.zoo.build_zoo`). ``train_scale`` scales the
    step counts (tests build untrained pairs for the plumbing)."""
    from workers.zoo.build import _lock, _threads, build_threads

    root = pair_dir(zoo_root)
    paths = {name: root / "models" / name for name in PAIR_NAMES}
    if train_scale == 1.0 and is_pair_built(zoo_root):
        return paths
    with _lock(root):
        if train_scale == 1.0 and is_pair_built(zoo_root):
            return paths
        with _threads(build_threads()):
            _build(Path(zoo_root), root, progress, train_scale)
    return paths


def _build(zoo_root: Path, root: Path, progress: bool, train_scale: float) -> None:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from workers.zoo.build import _progress, _save_model
    from workers.zoo.tokenizer import build_tokenizer
    from workers.zoo.train import greedy_accuracy, train

    hf_logging.disable_progress_bar()
    (root / DFS_MARKER).unlink(missing_ok=True)
    t0 = time.time()
    splits = D.all_splits()
    todo = phases(D.held_out_prompts(splits), train_scale)
    tokenizer = build_tokenizer()
    losses, models = {}, {}
    with _progress(progress) as bars:
        for name, phase in todo.items():
            model = AutoModelForCausalLM.from_pretrained(zoo_root / "models" / "base", dtype="float32")
            if name == "reader":
                model = with_prefix_block(model)
            bar = bars.add_task(f"train {name}", total=phase.steps, info="")
            curve = train(model, phase, progress=lambda step, _bar=bar: bars.update(_bar, completed=step + 1))
            losses[name] = round(sum(curve[-20:]) / min(20, len(curve)), 4)
            bars.update(bar, info=f"loss {losses[name]:.4f}")
            _save_model(model, tokenizer, root / "models" / name)
            models[name] = model
    target = splits["zoo_target"]["test"][: None if train_scale == 1.0 else 8]
    manifest = {
        "version": DFS_VERSION,
        "models": {n: f"models/{n}" for n in PAIR_NAMES},
        "designed_path": [list(step) for step in DESIGNED_PATH],
        "quick_target_test": {n: round(greedy_accuracy(m, target), 4) for n, m in models.items()},
        "final_train_loss": losses,
        "build_seconds": round(time.time() - t0, 1),
        "train_scale": train_scale,
    }
    (root / "pair.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if train_scale == 1.0:
        (root / DFS_MARKER).write_text(json.dumps({"version": DFS_VERSION, "fingerprint": fingerprint(),
                                                   "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
