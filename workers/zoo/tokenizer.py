"""The zoo's shared character-level tokenizer.

Every character is one token; the decoder concatenates tokens (no spaces are invented), so
``decode(encode(s)) == s`` for text over the vocabulary. A BOS token is prepended by the
post-processor, the way Llama tokenizers behave, so every consumer (HF, lm-eval, vLLM) that
calls the tokenizer with its defaults sees the same ids the models were trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
DIGITS = "0123456789"
# The second "language": one kana per digit, the first mora of the Japanese number word
# (rei, ichi, ni, san, shi, go, roku, nana, hachi, kyuu). The base model never sees them.
KANA = "れいにさしごろなはく"
LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()
PUNCT = "+-*=:?., \n"

MAX_LENGTH = 128


def vocabulary() -> dict[str, int]:
    """Token -> id, in a fixed order (specials first)."""
    vocab: dict[str, int] = {}
    for tok in (*SPECIALS, *DIGITS, *PUNCT, *LOWER, *UPPER, *KANA):
        if tok in vocab:  # pragma: no cover - guards edits to the alphabets above
            raise ValueError(f"duplicate token {tok!r}")
        vocab[tok] = len(vocab)
    return vocab


def build_tokenizer():
    """A ``transformers`` fast tokenizer over :func:`vocabulary` (nothing is downloaded)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_LENGTH,
    )


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save so that ``AutoTokenizer.from_pretrained`` loads it with any transformers >= 4.40."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
