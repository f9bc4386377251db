"""Passes a kernel skips or fuses: the result must be what the full computation gives (bit for bit
where nothing is rounded differently, to float32 accuracy where something is)."""

from __future__ import annotations

import pytest
import torch

from workers.merge_methods.base import weighted_sum
from workers.merge_methods.linear import linear
from workers.merge_methods.task_arithmetic import sum_rows


def _assert_float32_accurate_then_rounded_once(got: torch.Tensor, exact: torch.Tensor, scale: torch.Tensor):
    """``got`` (bfloat16) is within half a bfloat16 ulp of ``exact`` (float64), give or take a
    few float32 ulps of ``scale``: the sum was computed in float32 and rounded once."""
    _, exponent = torch.frexp(torch.maximum(got.double().abs(), exact.abs()))
    half_ulp = torch.ldexp(torch.ones_like(exact), exponent - 9)  # bfloat16: 8 significant bits
    slack = 4 * 2.0**-24 * scale
    assert ((got.double() - exact).abs() <= half_ulp + slack).all()


@pytest.mark.parametrize("weight", [[0.6, 0.4], [0.25, 0.75], [1.0 + 1e-12, -1e-12], [1.5, -0.5], [0.7, 0.45]])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_of_two_models_is_float32_accurate_and_rounded_once(weight, threads):
    """Two models normalized are an interpolation (one torch.lerp): its float32 result, rounded
    once, must be that of the exact sum, on any number of threads (a partial vector at the end of
    each thread's range runs torch's scalar code)."""
    gen = torch.Generator().manual_seed(2)
    a, b = [torch.randn(100_003, generator=gen).to(torch.bfloat16) for _ in range(2)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = linear([a, b], weight=weight)
    finally:
        torch.set_num_threads(previous)
    total = sum(weight)
    exact = (weight[0] * a.double() + weight[1] * b.double()) / total
    scale = (weight[0] * a.double()).abs() / abs(total) + (weight[1] * b.double()).abs() / abs(total)
    _assert_float32_accurate_then_rounded_once(got, exact, scale)


def test_a_term_with_coefficient_zero_is_left_out():
    gen = torch.Generator().manual_seed(4)
    x = [torch.randn(5000, generator=gen).to(torch.bfloat16) for _ in range(3)]
    with_zero = weighted_sum(x, [0.7, 0.0, -0.4], like=x[0])
    assert torch.equal(with_zero.view(torch.int16), weighted_sum([x[0], x[2]], [0.7, -0.4], like=x[0]).view(torch.int16))
    assert torch.equal(weighted_sum(x, [0.0, 0.0, 0.0], like=x[0]), torch.zeros(5000, dtype=torch.bfloat16))


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
