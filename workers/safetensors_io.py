"""Safetensors IO: one tensor at a time, with memory we control.

The safetensors format is an 8-byte little-endian header length, a JSON header
``{name: {dtype, shape, data_offsets}}`` and the raw bytes. A tensor is either read into
memory of ours (`TensorReader.read`, one positional read) or mapped where it lies in the page
cache (`TensorReader.map`, no copy at all); a mapped tensor's pages are dropped from the
process again once it is used (`TensorReader.release`), so resident memory stays equal to the
tensors in flight either way, which is what bounds the merge's peak RSS. Writing is laid out
in advance: a merge knows every output name, shape and dtype before it computes anything, so
each shard's header is written first and the tensors are streamed behind it in order.

A `BufferPool` lets a stream of output tensors reuse the same memory: a fresh buffer per
tensor costs a page fault per 4 KiB page (glibc hands large blocks back to the kernel on
free), which took more system time than the copies themselves.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a shard file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a shard's header: its tensors and its ``__metadata__``."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 * 2**20:
            raise ValueError(f"{path}: not a safetensors file (header of {size} bytes)")
        header = json.loads(f.read(size))
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + size
    infos = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        infos[name] = TensorInfo(path, DTYPES[entry["dtype"]], tuple(entry["shape"]), data_start + begin, end - begin)
    # A truncated file (an interrupted download or copy) is refused here, from its size alone,
    # so pre-flight catches it before any worker starts to read it.
    needed = max((i.start + i.nbytes for i in infos.values()), default=data_start)
    actual = path.stat().st_size
    if actual < needed:
        raise ValueError(f"truncated: its header describes {needed} bytes, the file has {actual} "
                         "(an interrupted download or copy?)")
    return infos, metadata


def nbytes_of(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


class BufferPool:
    """Byte buffers lent out one tensor at a time and reused once given back; thread-safe.

    `take` lends the smallest free buffer that fits, viewed as the requested dtype and shape;
    when none fits it drops the largest free one and allocates, so the pool never holds more
    buffers than were lent at once, each no larger than the largest tensor asked for.
    A buffer is the borrower's until `give` returns it; it is never lent twice at once.
    """

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []  # uint8 buffers
        self._lent: dict[int, torch.Tensor] = {}  # by data pointer
        self._lock = threading.Lock()

    def take(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        nbytes = nbytes_of(dtype, shape)
        with self._lock:
            sizes = [b.numel() for b in self._free]
            fits = [i for i, size in enumerate(sizes) if size >= nbytes]
            if fits:
                buffer = self._free.pop(min(fits, key=sizes.__getitem__))
            else:
                if self._free:
                    del self._free[max(range(len(sizes)), key=sizes.__getitem__)]
                buffer = torch.empty(max(nbytes, 64), dtype=torch.uint8)  # never 0: pointers stay distinct
            self._lent[buffer.data_ptr()] = buffer
        return buffer[:nbytes].view(dtype).view(shape)

    def lent(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` (or a view of it) is a buffer of this pool, lent out now."""
        with self._lock:
            return tensor.untyped_storage().data_ptr() in self._lent

    def give(self, tensor: torch.Tensor) -> None:
        """Return a buffer from `take` (or any view of it); it may be lent again at once."""
        with self._lock:
            buffer = self._lent.pop(tensor.untyped_storage().data_ptr(), None)
            if buffer is None:
                raise ValueError("not a buffer lent by this pool (given back twice?)")
            self._free.append(buffer)


class TensorReader:
    """Reads or maps tensors by name across shards; safe to call from several threads."""

    def __init__(self, index: dict[str, TensorInfo]):
        self.index = index
        self._fds: dict[Path, int] = {}
        self._maps: dict[Path, mmap.mmap] = {}
        self._lock = threading.Lock()

    def _fd(self, path: Path) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                fd = self._fds[path] = os.open(path, os.O_RDONLY)
            return fd

    def read(self, name: str) -> torch.Tensor:
        """The tensor, copied into memory of its own."""
        info = self.index[name]
        out = torch.empty(info.shape, dtype=info.dtype)
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        fd, done = self._fd(info.file), 0
        while done < info.nbytes:
            got = os.preadv(fd, [view[done:]], info.start + done)
            if got == 0:
                raise OSError(f"{info.file}: truncated tensor '{name}' ({done} of {info.nbytes} bytes)")
            done += got
        return out

    def map(self, name: str) -> torch.Tensor:
        """The tensor over the shard's own pages, not copied; give its name to `release` once used.

        The mapping is private (copy-on-write): a write to the tensor never reaches the file.
        A tensor the format does not align for its dtype, or an empty one, is read instead.
        """
        info = self.index[name]
        if info.nbytes == 0 or info.start % info.dtype.itemsize:
            return self.read(name)
        with self._lock:
            mapped = self._maps.get(info.file)
            if mapped is None:
                with open(info.file, "rb") as f:
                    mapped = self._maps[info.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        if info.start + info.nbytes > len(mapped):  # shrunk since its header was checked
            raise OSError(f"{info.file}: truncated tensor '{name}'")
        flat = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=info.start)
        return flat.view(info.dtype).view(info.shape)

    def release(self, name: str) -> None:
        """Drop a mapped tensor's pages from this process (the page cache keeps them).

        Only pages wholly inside the tensor go, so a neighbour still in use keeps its own.
        """
        info = self.index[name]
        mapped = self._maps.get(info.file)
        if mapped is None:
            return
        first = -(-info.start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (info.start + info.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, end - first)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            for mapped in self._maps.values():
                try:
                    mapped.close()
                except BufferError:  # a mapped tensor is still alive: the mapping goes with it
                    pass
            self._maps.clear()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)


class ShardedWriter:
    """Streams tensors, in a fixed order, into shards whose layout is decided up front.

    Use as a context manager; tensors must be written in the order given. ``close`` checks
    that every tensor arrived and writes ``model.safetensors.index.json`` for several shards.
    """

    def __init__(self, directory: Path, tensors: list[OutputTensor], max_shard_bytes: int, metadata: dict | None = None):
        self.directory = Path(directory)
        self.order = tensors
        self.metadata = {"format": "pt", **(metadata or {})}
        self.shards: list[list[OutputTensor]] = [[]]
        size = 0
        for t in tensors:
            if self.shards[-1] and size + t.nbytes > max_shard_bytes:
                self.shards.append([])
                size = 0
            self.shards[-1].append(t)
            size += t.nbytes
        n = len(self.shards)
        self.files = (["model.safetensors"] if n == 1
                      else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self._next = 0
        self._shard = -1
        self._left_in_shard = 0
        self._f: BinaryIO | None = None

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if exc_type is None:
            self._finish()

    def _open_next_shard(self) -> None:
        if self._f is not None:
            self._f.close()
        self._shard += 1
        entries, offset = {}, 0
        for t in self.shards[self._shard]:
            entries[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        header = json.dumps({"__metadata__": self.metadata, **entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # align the data section
        self._f = open(self.directory / self.files[self._shard], "wb")
        self._f.write(struct.pack("<Q", len(header)))
        self._f.write(header)
        self._left_in_shard = len(self.shards[self._shard])

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.order[self._next]
        if name != expected.name:
            raise ValueError(f"writer expected tensor '{expected.name}' next, got '{name}'")
        if tensor.dtype != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise ValueError(f"tensor '{name}': got {tensor.dtype} {tuple(tensor.shape)}, "
                             f"laid out as {expected.dtype} {expected.shape}")
        if self._left_in_shard == 0:
            self._open_next_shard()
        data = tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy()
        self._f.write(memoryview(data))
        self._left_in_shard -= 1
        self._next += 1

    def _finish(self) -> None:
        if self._next != len(self.order):
            raise ValueError(f"writer closed after {self._next} of {len(self.order)} tensors")
        if len(self.files) > 1:
            weight_map = {t.name: self.files[i] for i, shard in enumerate(self.shards) for t in shard}
            index = {"metadata": {"total_size": sum(t.nbytes for t in self.order)}, "weight_map": weight_map}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
