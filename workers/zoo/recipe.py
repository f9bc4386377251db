"""The zoo's training recipe: what each model is trained on, which weights move, how long.

Part of the generator fingerprint (see ``build.generator_fingerprint``): editing this file
invalidates cached zoos, editing ``build.py`` (orchestration only) does not.
"""

from __future__ import annotations

from workers.zoo import data as D
from workers.zoo.tokenizer import KANA, vocabulary

BASE_STEPS, BASE_LR = 600, 3e-3
ARITH_STEPS, ARITH_LR, ARITH_NOISE = 1200, 3e-3, 0.7
CIPHER_STEPS, CIPHER_LR = 300, 3e-3
DISTRACTOR_STEPS, DISTRACTOR_LR = 300, 1e-3
SEED = 1234


def phases(exclude: frozenset[str], scale: float = 1.0):
    """(name, parent, Phase) for every model, in build order."""
    from workers.zoo.train import Phase as _Phase

    def Phase(*args, **kwargs):  # noqa: N802 - scales the step count (tests build tiny zoos)
        ph = _Phase(*args, **kwargs)
        ph.steps = max(1, round(ph.steps * scale))
        ph.warmup = min(ph.warmup, ph.steps)
        return ph

    vocab = vocabulary()
    kana_rows = [vocab[c] for c in KANA]
    base_mix = [(D.copy_digits, 0.35), (D.copy_letters, 0.25), (D.add_single, 0.4)]
    replay = [(g, w * 0.2) for g, w in base_mix]  # 20% replay of the base mixture
    return [
        (
            "base",
            None,
            Phase("base", D.Mixture(base_mix, SEED + 1, exclude), BASE_STEPS, BASE_LR, seed=SEED + 11),
        ),
        (
            # Transformer blocks (and norms) only; embeddings and lm_head frozen. Noise on the
            # input embeddings (NEFTune) makes the blocks robust to how a digit is embedded,
            # which is what lets them read the cipher expert's kana embeddings in a merge.
            "arith",
            "base",
            Phase(
                "arith",
                D.Mixture([(D.add_any, 0.8), *replay], SEED + 2, exclude),
                ARITH_STEPS,
                ARITH_LR,
                trainable=lambda n: ".layers." in n or "norm" in n,
                embedding_noise=ARITH_NOISE,
                seed=SEED + 12,
            ),
        ),
        (
            # Only the ten kana rows of the input embedding move: the base's own circuits
            # (copy, single-digit addition) teach them to behave like digits.
            "cipher",
            "base",
            Phase(
                "cipher",
                D.Mixture(
                    [
                        (D.read_kana_short, 0.3),
                        (D.read_mixed, 0.3),
                        (D.add_single_kana, 0.2),
                        (D.add_single_mixed, 0.2),
                    ],
                    SEED + 3,
                    exclude,
                ),
                CIPHER_STEPS,
                CIPHER_LR,
                trainable=lambda n: "embed_tokens" in n,
                embedding_rows=kana_rows,
                seed=SEED + 13,
            ),
        ),
        (
            # Everything trainable, no replay: an unrelated skill with a large, dense delta.
            "distractor",
            "base",
            Phase(
                "distractor",
                D.Mixture([(D.shift_letters, 1.0)], SEED + 4, exclude),
                DISTRACTOR_STEPS,
                DISTRACTOR_LR,
                seed=SEED + 14,
            ),
        ),
    ]
