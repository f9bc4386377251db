"""The zoo's data-flow pair: two models on which a layer *path* beats both parents and every
parameter-space merge on ``zoo_target`` (the design study is in docs/zoo.md).

- ``reader`` (model A): zoo v1's base with one extra block in front (5 layers). The block
  starts as an exact identity (zeroed output projections) and is the only thing trained, to
  turn kana into what the base's first block expects.
- ``adder`` (model B): zoo v1's base with every block fine-tuned on two-digit addition, with
  embedding noise so its blocks accept a foreign block in front.

Neither reads kana *and* adds, and a same-shape merge has no slot for the reader's extra
block; the stacked path ``reader.0, adder.0-3, reader.4`` does both. Built into
``<zoo>/dfs-v1`` (`workers.zoo.derived`).
"""

from __future__ import annotations

from pathlib import Path

from workers.zoo import data as D
from workers.zoo.derived import DerivedBuild

SEED = 4321
READER_STEPS, READER_LR = 400, 3e-3
ADDER_STEPS, ADDER_LR, ADDER_NOISE = 1000, 3e-3, 0.7
# The stacked path the design was made for (model, layer); docs/zoo.md has its scores.
DESIGNED_PATH = (("reader", 0), ("adder", 0), ("adder", 1), ("adder", 2), ("adder", 3), ("reader", 4))


def phases(exclude: frozenset[str], scale: float = 1.0) -> dict[str, list]:
    """{model: [Phase]}: what each model of the pair trains, from zoo v1's base."""
    from workers.zoo.train import Phase

    cipher = [(D.read_kana_short, 0.3), (D.read_mixed, 0.3), (D.add_single_kana, 0.2), (D.add_single_mixed, 0.2)]
    replay = [(g, w * 0.2) for g, w in [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]]

    def steps(n: int) -> int:
        return max(1, round(n * scale))

    return {
        # Only the new front block (layer 0 once inserted) trains.
        "reader": [Phase("reader", D.Mixture([*cipher, *replay], SEED + 8, exclude), steps(READER_STEPS),
                         READER_LR, trainable=lambda n: ".layers.0." in n, seed=SEED + 108,
                         warmup=min(50, steps(READER_STEPS)))],
        "adder": [Phase("adder", D.Mixture([(D.add_any, 0.8), *replay], SEED + 6, exclude), steps(ADDER_STEPS),
                        ADDER_LR, trainable=lambda n: ".layers." in n or "norm" in n, embedding_noise=ADDER_NOISE,
                        seed=SEED + 106, warmup=min(50, steps(ADDER_STEPS)))],
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


DATA_FLOW_PAIR = DerivedBuild(
    "dfs", 1, ("reader", "adder"), Path(__file__), phases,
    prepare=lambda name, model: with_prefix_block(model) if name == "reader" else model,
)
