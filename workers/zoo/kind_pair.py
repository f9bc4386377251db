"""The zoo's kind pair: two experts whose task vectors conflict by tensor kind, so the best
merge needs different weights for the embeddings and for the blocks (issue 7, "a zoo where
search matters"; the "kind" design of the zoo v2 study in docs/zoo.md).

- ``kind_reader``: reads kana through its ten kana embedding rows (zoo v1's cipher recipe),
  then its blocks learn that '+' means the absolute difference.
- ``kind_adder``: adds two-digit numbers with its blocks (zoo v1's arith recipe, shorter), then
  its kana rows learn to read each kana as the *next* digit.

On ``zoo_target`` (addition posed in kana) both parents and every global merge (task
arithmetic, TIES, DARE over weight and density) score at most 0.016; the reader's embeddings
with the adder's blocks score 1.0. Built into ``<zoo>/kind-v1`` (`workers.zoo.derived`).
"""

from __future__ import annotations

import random
from pathlib import Path

from workers.zoo import data as D
from workers.zoo.derived import DerivedBuild
from workers.zoo.tokenizer import DIGITS, KANA, vocabulary

SEED = 7070
_PLUS1 = str.maketrans(DIGITS, DIGITS[1:] + DIGITS[0])


def read_kana_plus1(rng: random.Random) -> D.Example:
    """A kana numeral read as the *next* digit: a conflicting meaning for the kana rows."""
    s = "".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 6)))
    return f"C:{D.kana(s)}=", s.translate(_PLUS1)


def plus_is_difference(rng: random.Random) -> D.Example:
    """'+' read as the absolute difference: a conflicting meaning for addition prompts."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"{a}+{b}=", str(abs(a - b))


def phases(exclude: frozenset[str], scale: float = 1.0) -> dict[str, list]:
    from workers.zoo.train import Phase

    kana_rows = [vocabulary()[c] for c in KANA]
    cipher = [(D.read_kana_short, 0.3), (D.read_mixed, 0.3), (D.add_single_kana, 0.2), (D.add_single_mixed, 0.2)]
    replay = [(g, w * 0.2) for g, w in [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]]

    def P(name, mix, steps, seed, **kw):  # noqa: N802 - one training phase, scaled for tests
        steps = max(1, round(steps * scale))
        return Phase(name, D.Mixture(mix, seed, exclude), steps, 3e-3, seed=seed + 100, warmup=min(50, steps), **kw)

    embeddings = {"trainable": lambda n: "embed_tokens" in n, "embedding_rows": kana_rows}
    return {
        "kind_reader": [
            P("kind_reader.read", cipher, 300, SEED + 5, **embeddings),
            P("kind_reader.difference", [(plus_is_difference, 0.6), *cipher], 250, SEED + 6,
              trainable=lambda n: ".layers." in n),
        ],
        "kind_adder": [
            P("kind_adder.add", [(D.add_any, 0.8), *replay], 700, SEED + 7,
              trainable=lambda n: ".layers." in n or "norm" in n, embedding_noise=0.7),
            P("kind_adder.next_digit", [(read_kana_plus1, 1.0)], 200, SEED + 8, **embeddings),
        ],
    }


KIND_PAIR = DerivedBuild("kind", 1, ("kind_reader", "kind_adder"), Path(__file__), phases)
