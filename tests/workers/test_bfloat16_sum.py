"""The compiled bfloat16 weighted sum gives the torch path's bits, edge values included."""

from __future__ import annotations

import pytest
import torch

from workers.merge_methods import base, bfloat16_sum


@pytest.fixture(autouse=True)
def _compiled():
    assert bfloat16_sum.ready(wait=True), "the compiled kernel did not load"


def _torch_path(tensors, coefficients, divide_by):
    """`base.weighted_sum` with the compiled path switched off."""
    original = bfloat16_sum.applies
    bfloat16_sum.applies = lambda *_: False
    try:
        return base.weighted_sum(tensors, coefficients, like=tensors[0], divide_by=divide_by)
    finally:
        bfloat16_sum.applies = original


def _inputs(count: int, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = [(torch.randn(n, generator=g) * torch.rand(n, generator=g) ** 6 * 10).to(torch.bfloat16)
               for _ in range(count)]
    for i, t in enumerate(tensors):  # signed zeros, a cancellation, overflow, tiny values
        t[i::97] = 0.0
        t[i::89] = -0.0
        t[3:9] = torch.tensor([3e38, -3e38, 1e-40, -1e-40, 65504.0, 1.0])
    tensors[-1][:1000] = -tensors[0][:1000]
    return tensors


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("divide_by", [None, 1.7, 0.3])
def test_compiled_sum_is_bit_for_bit_the_torch_path(count, divide_by):
    n = 3 * 4096 + 4099  # whole chunks, and a tail of torch's scalar loop and ours
    tensors = _inputs(count, n, seed=count)
    coefficients = [0.6, -0.4, 1.3, 0.25, -2.0][:count]
    assert bfloat16_sum.applies(tensors, torch.empty(1, dtype=torch.bfloat16))
    ours = base.weighted_sum(tensors, coefficients, like=tensors[0], divide_by=divide_by)
    theirs = _torch_path(tensors, coefficients, divide_by)
    assert ours.dtype == torch.bfloat16 and ours.shape == theirs.shape
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))


def test_a_nan_stays_nan_and_shapes_are_kept():
    a = torch.randn(4, 8192).to(torch.bfloat16)
    a[1, 5] = float("nan")
    b = torch.randn(4, 8192).to(torch.bfloat16)
    out = torch.empty_like(a)
    merged = base.weighted_sum([a, b], [0.5, 0.5], like=a, out=out)
    assert merged is out and merged.shape == (4, 8192)
    assert torch.isnan(merged[1, 5]) and torch.isnan(merged).sum() == 1


def test_other_dtypes_and_strided_tensors_take_the_torch_path():
    x = torch.randn(64, 64)
    assert not bfloat16_sum.applies([x], x)
    y = torch.randn(64, 64).to(torch.bfloat16).t()  # not contiguous
    assert not bfloat16_sum.applies([y], torch.empty(64, 64, dtype=torch.bfloat16))
    merged = base.weighted_sum([y, y], [0.5, 0.5], like=y)
    assert torch.equal(merged, y)


def test_a_kernel_that_cannot_load_leaves_the_torch_path_with_a_warning(monkeypatch, caplog):
    import sys
    import threading

    monkeypatch.setitem(sys.modules, "workers.merge_methods.bfloat16_sum_kernel", None)  # import fails
    monkeypatch.setattr(bfloat16_sum, "_kernel", None)
    monkeypatch.setattr(bfloat16_sum, "_loaded", threading.Event())
    monkeypatch.setattr(bfloat16_sum, "_load_started", threading.Lock())
    with caplog.at_level("WARNING", logger=bfloat16_sum.__name__):
        assert not bfloat16_sum.ready(wait=True)
    assert "did not load" in caplog.text
    tensors = _inputs(2, 5000, seed=7)
    merged = base.weighted_sum(tensors, [0.5, 0.5], like=tensors[0])
    assert torch.equal(merged.view(torch.int16), _torch_path(tensors, [0.5, 0.5], None).view(torch.int16))
