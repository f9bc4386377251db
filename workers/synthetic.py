"""Random Llama checkpoints made on the fly, for tests, benchmarks and the first demo.

A "family" is a base model plus fine-tune-like variants (base + small noise), written as real
(optionally sharded) safetensors directories with a config and tokenizer that `transformers`
loads. Tensors are generated one at a time, so a 0.5B-parameter family fits in little memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from workers.safetensors_io import OutputTensor, ShardedWriter


@dataclass(frozen=True)
class LlamaShape:
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    kv_heads: int = 1
    intermediate: int = 128
    vocab: int = 64
    tie_embeddings: bool = False

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        head_dim = self.hidden // self.heads
        out = [("model.embed_tokens.weight", (self.vocab, self.hidden))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [
                (p + "input_layernorm.weight", (self.hidden,)),
                (p + "self_attn.q_proj.weight", (self.heads * head_dim, self.hidden)),
                (p + "self_attn.k_proj.weight", (self.kv_heads * head_dim, self.hidden)),
                (p + "self_attn.v_proj.weight", (self.kv_heads * head_dim, self.hidden)),
                (p + "self_attn.o_proj.weight", (self.hidden, self.heads * head_dim)),
                (p + "post_attention_layernorm.weight", (self.hidden,)),
                (p + "mlp.gate_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.up_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.down_proj.weight", (self.hidden, self.intermediate)),
            ]
        out.append(("model.norm.weight", (self.hidden,)))
        if not self.tie_embeddings:
            out.append(("lm_head.weight", (self.vocab, self.hidden)))
        return out

    def config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.hidden // self.heads,
            "vocab_size": self.vocab, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
            "hidden_act": "silu", "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
        }


def _tensor(name: str, shape: tuple[int, ...], seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
        return 1.0 + scale * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) * scale


def write_model(directory: str | Path, shape: LlamaShape, *, seed: int, base_seed: int | None = None,
                noise: float = 0.002, dtype: torch.dtype = torch.float32, max_shard_bytes: int = 2**40) -> Path:
    """Write a random model; with ``base_seed`` it is that base plus noise of std ``noise``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = shape.tensors()
    layout = [OutputTensor(n, dtype, s) for n, s in names]
    with ShardedWriter(directory, layout, max_shard_bytes) as writer:
        for i, (name, s) in enumerate(names):
            if base_seed is None:
                t = _tensor(name, s, seed * 100_003 + i, 0.02)
            else:
                t = _tensor(name, s, base_seed * 100_003 + i, 0.02)
                t += noise * torch.randn(s, generator=torch.Generator().manual_seed(seed * 100_003 + i))
            writer.write(name, t.to(dtype))
    config = shape.config() | {"torch_dtype": str(dtype).removeprefix("torch.")}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(directory, shape.vocab)
    return directory


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """A word-level tokenizer with ``vocab_size`` entries: <pad>, <s>, </s>, <unk>, then w4, w5..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 256,
    }, indent=2))


def write_family(root: str | Path, shape: LlamaShape, n_variants: int = 2, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, max_shard_bytes: int = 2**40) -> list[Path]:
    """A base (``root/base``) and ``n_variants`` fine-tune-like variants (``root/variant_i``)."""
    root = Path(root)
    paths = [write_model(root / "base", shape, seed=seed, dtype=dtype, max_shard_bytes=max_shard_bytes)]
    for i in range(n_variants):
        paths.append(write_model(root / f"variant_{i}", shape, seed=seed + 1 + i, base_seed=seed,
                                 dtype=dtype, max_shard_bytes=max_shard_bytes))
    return paths
