"""Mapped tensors (`TensorReader.map`): the file's bytes without a copy, never written back,
and dropped from the process's resident memory by `release`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from workers.safetensors_io import OutputTensor, ShardedWriter, TensorReader, read_header

MIB = 2**20


def _write(directory: Path, tensors: dict[str, torch.Tensor]) -> dict:
    layout = [OutputTensor(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    with ShardedWriter(directory, layout, max_shard_bytes=2**34) as writer:
        for name, t in tensors.items():
            writer.write(name, t)
    index, _ = read_header(directory / "model.safetensors")
    return index


def _rss_file_bytes() -> int:
    """Resident file-backed pages of this process (mapped tensors count here)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+) kB", status).group(1)) * 1024


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "bf16": torch.randn(64, 300, generator=gen).to(torch.bfloat16),
        "odd_f16": torch.randn(3, 5, 11, generator=gen).to(torch.float16),  # 330 bytes: the next one is unaligned
        "f32": torch.randn(7, generator=gen),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 4),
        "ints": torch.randint(-1000, 1000, (129,), generator=gen),
        "mask": torch.rand(33, generator=gen) > 0.5,
    }


def test_a_mapped_tensor_holds_the_files_bytes(tmp_path, tensors):
    index = _write(tmp_path, tensors)
    with TensorReader(index) as reader:
        for name, expected in tensors.items():
            mapped = reader.map(name)
            assert mapped.dtype == expected.dtype and mapped.shape == expected.shape
            assert torch.equal(mapped, expected), name
            reader.release(name)
            assert torch.equal(mapped, expected), f"{name}: released pages read back from the file"


def test_writing_into_a_mapped_tensor_never_reaches_the_file(tmp_path, tensors):
    index = _write(tmp_path, tensors)
    before = (tmp_path / "model.safetensors").read_bytes()
    with TensorReader(index) as reader:
        mapped = reader.map("bf16")
        mapped.fill_(7.0)
        assert bool((mapped == 7.0).all())
        again = TensorReader(index)
        assert torch.equal(again.map("bf16"), tensors["bf16"])  # another reader sees the file
        again.close()
        del mapped
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_release_drops_a_mapped_tensors_pages_from_resident_memory(tmp_path):
    big = torch.arange(16 * MIB, dtype=torch.int32)  # 64 MiB
    index = _write(tmp_path, {"big": big})
    with TensorReader(index) as reader:
        mapped = reader.map("big")
        start = _rss_file_bytes()
        assert int(mapped[:: 1024].sum()) == int(big[:: 1024].sum())  # touches every page
        touched = _rss_file_bytes()
        assert touched - start > 48 * MIB
        reader.release("big")
        assert touched - _rss_file_bytes() > 48 * MIB
        assert torch.equal(mapped[-5:], big[-5:])  # still readable: faulted in again from the file


def test_a_file_shrunk_after_its_header_was_read_is_refused(tmp_path, tensors):
    index = _write(tmp_path, tensors)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with TensorReader(index) as reader, pytest.raises(OSError, match="truncated tensor 'mask'"):
        reader.map("mask")
