"""Passes a kernel skips because they change no bit: the result must equal the full computation."""

from __future__ import annotations

import torch

from workers.merge_methods.linear import linear


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
