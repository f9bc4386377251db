"""Passes a kernel skips because they change no bit: the result must equal the full computation."""

from __future__ import annotations

import pytest
import torch

from workers.merge_methods.linear import linear
from workers.merge_methods.task_arithmetic import sum_rows


def test_linear_with_weights_summing_to_one_equals_the_division_it_skips():
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(1000, generator=gen).to(torch.bfloat16) for _ in range(2)]
    tensors[0][:10], tensors[1][:10] = -0.0, -0.0  # signed zeros survive
    for weight in ([0.6, 0.4], [0.25, 0.75], [1.0 + 1e-12, -1e-12]):
        acc = torch.zeros(1000)
        for x, w in zip(tensors, weight):
            acc.add_(x.float(), alpha=w)
        expected = acc.div_(sum(weight)).to(torch.bfloat16)
        assert torch.equal(linear(tensors, weight=weight).view(torch.int16), expected.view(torch.int16))


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as in merge_to_disk, where the shortcut applies
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 15, 16, 17, 40])
@pytest.mark.parametrize("n", [7, 3 * 4096 + 5, 2**18, 2**18 + 13])
def test_sum_rows_equals_torch_sum_bit_for_bit(rows, n, one_thread):
    gen = torch.Generator().manual_seed(rows * n)
    d = torch.randn(rows, n, generator=gen) * torch.logspace(-44, 38, n)  # subnormals to near overflow
    d[:, :5] = -0.0  # every row -0: torch's sum gives +0
    d[::2, 5:7] = 0.0
    d[1::2, 5:7] = -0.0
    if n > 200:
        d[0, 100:120] = float("inf")
        d[-1, 110:130] = float("-inf")
        d[rows // 2, 130:140] = float("nan")
        d[:, 140:160] = 3e38  # overflow to inf on the way
    expected = d.sum(dim=0)
    got = sum_rows(d, torch.full((n,), 7.0))
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
