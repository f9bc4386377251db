"""Block-by-block element-wise kernels (`base.blocks`): the result must not depend on the block
size, bit for bit, including a last partial block."""

from __future__ import annotations

import math

import pytest
import torch

from workers.merge_methods import base as base_module
from workers.merge_methods import get_method
from workers.merge_methods.base import blocks

PARAMS = {
    "linear": {"weight": [0.3, -0.7, 1.1], "normalize": True},
    "task_arithmetic": {"weight": [0.6, 1.3, -0.2], "lambda": 0.7, "normalize": True},
    "ties": {"weight": [0.4, 0.9, 1.7], "density": [0.3, 1.0, 0.5], "normalize": True},
    "breadcrumbs": {"weight": [0.5, 1.1, 0.8], "density": [0.5, 0.9, 0.4], "gamma": [0.01, 0.1, 0.0]},
    "dare_ties": {"weight": [0.5, 0.3, 0.9], "density": [0.5, 0.4, 0.6]},
    "della": {"weight": [0.5, 0.3, 0.9], "density": [0.5, 0.4, 0.6], "epsilon": [0.1, 0.2, 0.1]},
    "slerp": {"t": 0.3},
}


def test_blocks_cover_the_range_in_order():
    assert blocks(0, torch.device("cpu")) == []
    parts = blocks(2 * base_module.BLOCK + 3, torch.device("cpu"))
    assert [p.start for p in parts] == [0, base_module.BLOCK, 2 * base_module.BLOCK]
    assert parts[-1].stop == 2 * base_module.BLOCK + 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", list(PARAMS))
def test_result_does_not_depend_on_the_block_size(name, dtype, monkeypatch):
    g = torch.Generator().manual_seed(0)
    b = torch.randn(37, 29, generator=g)
    models = [(b + 0.1 * torch.randn(37, 29, generator=g)).to(dtype) for _ in range(3)]
    b = b.to(dtype)
    models = models[:1] if name == "slerp" else models
    method = get_method(name)
    uses_base = method.base != "unused"

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(1) if method.randomized else None
        return method(models, b if uses_base else None, generator=generator, **PARAMS[name])

    whole = run()
    monkeypatch.setattr(base_module, "BLOCK", 64)  # 37 * 29 = 1073 = 16 blocks of 64 and one of 49
    blocked = run()
    assert blocked.dtype == dtype and blocked.shape == whole.shape
    assert torch.equal(blocked.view(-1).view(torch.uint8), whole.view(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,n_models", [("linear", 3), ("linear", 2), ("task_arithmetic", 3),
                                           ("task_arithmetic", 1), ("ties", 3), ("slerp", 1)])
def test_half_precision_inputs_are_computed_in_float32_then_rounded_once(name, n_models, dtype):
    """Half-precision inputs are read as float32 inside the kernels' own ops (no scratch copy):
    the result must be the float32 merge of the same values, rounded once. Two models of linear
    and one of task arithmetic are interpolations (`base.weighted_sum`), the others sums."""
    g = torch.Generator().manual_seed(2)
    b = torch.randn(300, 301, generator=g).to(dtype)  # > one block: a partial last block too
    models = [(b.float() + 0.1 * torch.randn(300, 301, generator=g)).to(dtype) for _ in range(3)]
    models = models[:n_models]
    params = {k: v[:n_models] if isinstance(v, list) else v for k, v in PARAMS[name].items()}
    method = get_method(name)
    half = method(models, b, **params)
    full = method([m.float() for m in models], b.float(), **params).to(dtype)
    assert half.dtype == dtype
    assert torch.equal(half.view(-1).view(torch.int16), full.view(-1).view(torch.int16))


def test_slerp_sums_its_angle_over_every_chunk(monkeypatch):
    """The angle's dot products run chunk by chunk (a partial last chunk too) and must be those of
    the whole vectors: computed in float64 here, the angle agrees to float32 precision."""
    from workers.merge_methods import slerp as slerp_module

    g = torch.Generator().manual_seed(3)
    a = torch.randn(1000, generator=g).to(torch.bfloat16)
    b = (a.float() + torch.randn(1000, generator=g)).to(torch.bfloat16)
    monkeypatch.setattr(slerp_module, "CHUNK", 64)  # 15 chunks of 64 and one of 40
    got = slerp_module.slerp_coefficients(a, b, 0.3)
    a64, b64 = a.double(), b.double()
    theta = math.acos(float(a64 @ b64 / a64.norm() / b64.norm()))
    expected = (math.sin(0.7 * theta) / math.sin(theta), math.sin(0.3 * theta) / math.sin(theta))
    assert got == pytest.approx(expected, rel=1e-6)
