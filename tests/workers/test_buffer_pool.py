"""Buffers reused across tensors (`BufferPool`): the same bytes as fresh memory, never lent twice."""

from __future__ import annotations

import threading

import pytest
import torch

from workers.merge_methods import get_method
from workers.safetensors_io import BufferPool, OutputTensor, ShardedWriter, TensorReader, read_header

# sizes go up and down and dtypes change, so buffers are reused for other shapes and dtypes
TENSORS = {
    "big": (torch.bfloat16, (64, 300)),
    "small": (torch.float32, (7,)),
    "odd": (torch.float16, (3, 5, 11)),
    "scalar": (torch.float64, ()),
    "empty": (torch.float32, (0, 4)),
    "ints": (torch.int64, (129,)),
    "mask": (torch.bool, (33,)),
    "bigger": (torch.float32, (200, 100)),
    "last": (torch.bfloat16, (17, 3)),
}


def _random(dtype: torch.dtype, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-1000, 1000, shape, generator=gen, dtype=dtype)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


@pytest.fixture
def shard(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {name: _random(dtype, shape, gen) for name, (dtype, shape) in TENSORS.items()}
    layout = [OutputTensor(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    with ShardedWriter(tmp_path, layout, max_shard_bytes=2**30) as writer:
        for name, t in tensors.items():
            writer.write(name, t)
    index, _ = read_header(tmp_path / "model.safetensors")
    return index, tensors


def test_reused_buffers_hold_what_was_written_into_them(shard):
    index, tensors = shard
    pool = BufferPool()
    with TensorReader(index) as reader:
        for _ in range(2):  # the second pass only reuses
            for name in TENSORS:
                pooled = pool.take(tensors[name].dtype, tuple(tensors[name].shape))
                pooled.copy_(reader.read(name))
                assert pooled.dtype == tensors[name].dtype and pooled.shape == tensors[name].shape
                assert torch.equal(pooled, tensors[name])
                pool.give(pooled)


def test_a_buffer_is_never_lent_twice_at_once():
    pool = BufferPool()
    held = [pool.take(torch.float32, (n,)) for n in (10, 1000, 10, 0, 0)]
    pointers = [t.untyped_storage().data_ptr() for t in held]
    assert len(set(pointers)) == len(held)
    pool.give(held[1])
    again = pool.take(torch.bfloat16, (1500,))  # fits in the freed 4000 bytes
    assert again.untyped_storage().data_ptr() == pointers[1]
    assert again.untyped_storage().data_ptr() not in pointers[:1] + pointers[2:]
    pool.give(again)
    with pytest.raises(ValueError, match="given back twice"):
        pool.give(again)
    with pytest.raises(ValueError, match="not a buffer"):
        pool.give(torch.empty(3))


def test_threads_never_share_a_buffer():
    pool, lock, lent, clashes = BufferPool(), threading.Lock(), set(), []

    def work(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(200):
            n = int(torch.randint(1, 5000, (), generator=gen))
            t = pool.take(torch.int32, (n,))
            ptr = t.untyped_storage().data_ptr()
            with lock:
                if ptr in lent:
                    clashes.append(ptr)
                lent.add(ptr)
            t.fill_(seed)
            assert bool((t == seed).all())  # nobody else wrote into it meanwhile
            with lock:
                lent.discard(ptr)
            pool.give(t)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clashes


def test_the_pool_holds_no_more_buffers_than_were_lent_at_once():
    pool = BufferPool()
    for n in (10, 100, 1000, 10_000, 50, 20_000):  # growing sizes: each needs a new buffer
        a, b = pool.take(torch.uint8, (n,)), pool.take(torch.uint8, (n // 2,))
        pool.give(a)
        pool.give(b)
        assert len(pool._free) <= 2 and not pool._lent


@pytest.mark.parametrize("method,params,with_base", [
    ("linear", {"weight": [0.3, -0.7]}, False),
    ("task_arithmetic", {"weight": [0.6, 1.3], "lambda": 0.7}, True),
    ("ties", {"weight": [0.4, 0.9], "density": [0.3, 1.0]}, True),
    ("slerp", {"t": 0.3}, True),
])
def test_a_kernel_writes_into_a_given_output_bit_for_bit(method, params, with_base):
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randn(300, 70, generator=gen).to(torch.bfloat16) for _ in range(1 if method == "slerp" else 2)]
    base = torch.randn(300, 70, generator=gen).to(torch.bfloat16) if with_base else None
    merge = get_method(method)
    assert merge.writes_into
    expected = merge(tensors, base, **params)
    out = torch.full_like(expected, float("nan"))  # stale contents must not matter
    got = merge(tensors, base, out=out, **params)
    assert got is out and torch.equal(got.view(torch.int16), expected.view(torch.int16))

