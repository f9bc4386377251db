"""A model directory on disk: its config, tokenizer files and a lazy index of its tensors."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from search_spaces.errors import UserError
from workers.safetensors_io import TensorInfo, TensorReader, read_header

LAYER_RE = re.compile(r"\.layers\.(\d+)\.")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
)


class CheckpointError(UserError):
    """A model directory that cannot be read as a safetensors checkpoint."""


@dataclass
class Checkpoint:
    path: Path
    config: dict
    index: dict[str, TensorInfo]

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        """Index a model directory; refuses pickle checkpoints, which execute code on load."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: model directory not found")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{path}: no config.json (not a Hugging Face model directory)")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_file}: malformed JSON: {exc.msg} at line {exc.lineno}") from None
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise CheckpointError(
                    f"{path}: only pickle checkpoints ({pickles[0]}); they run code when loaded, so they "
                    "are refused. Convert them to safetensors first"
                )
            raise CheckpointError(f"{path}: no *.safetensors weights")
        index: dict[str, TensorInfo] = {}
        for shard in shards:
            try:
                infos, _ = read_header(shard)
            except (ValueError, KeyError, OSError) as exc:
                raise CheckpointError(f"{shard}: unreadable safetensors file ({exc})") from None
            index.update(infos)
        return cls(path, config, index)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.config.get("model_type", "?")]
        return archs[0]

    @cached_property
    def num_layers(self) -> int:
        layers = [int(m.group(1)) for n in self.index if (m := LAYER_RE.search(n))]
        return max(layers) + 1 if layers else 0

    def shape(self, name: str) -> tuple[int, ...]:
        return self.index[name].shape

    def reader(self) -> TensorReader:
        return TensorReader(self.index)

    @cached_property
    def tokenizer_digest(self) -> str | None:
        """A hash of tokenizer.json's bytes (None without one): equal files need no parsing."""
        tok = self.path / "tokenizer.json"
        return hashlib.sha256(tok.read_bytes()).hexdigest() if tok.is_file() else None

    @cached_property
    def vocabulary_fingerprint(self) -> str | None:
        """A hash of the tokenizer's vocabulary (None when the directory has no tokenizer.json)."""
        tok = self.path / "tokenizer.json"
        if not tok.is_file():
            return None
        data = json.loads(tok.read_text())
        vocab = {"model": data.get("model", {}).get("vocab"), "added": [
            (t.get("id"), t.get("content")) for t in data.get("added_tokens", [])]}
        return hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()


def layer_of(name: str) -> int | None:
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def with_layer(name: str, layer: int) -> str:
    """The same tensor name at another layer index."""
    return LAYER_RE.sub(f".layers.{layer}.", name, count=1)
