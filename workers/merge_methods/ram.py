"""RAM and RAM+ (tensor-local) (Reinforced Agent Merging, https://arxiv.org/abs/2601.13572):
average only the task vectors that actually changed an entry.

With task vectors d_i = x_i - b, an entry counts for model i when |d_i| > ``epsilon``; c is
how many models count there. RAM: merged = b + sum_i [counted] d_i / max(c, 1), so an entry
changed by one model keeps that change in full instead of being diluted by the others.

RAM+ (``ramplus_tl``) also boosts the unique entries of model i by
lambda_i = 1 + r · min(max(rho_i, 0), alpha), with rho_i = (its shared entries) /
max(its unique entries, epsilon), counted over this tensor.
"""

from __future__ import annotations

import torch

from workers.merge_methods.base import check_shapes, compute_dtype


def ram(tensors: list[torch.Tensor], base: torch.Tensor, *, epsilon: float = 1e-5) -> torch.Tensor:
    return _ram(tensors, base, epsilon, boost=None)


def ramplus_tl(tensors: list[torch.Tensor], base: torch.Tensor, *, r: float = 0.1, alpha: float = 0.2,
               epsilon: float = 1e-5) -> torch.Tensor:
    return _ram(tensors, base, epsilon, boost=(r, alpha))


def _ram(tensors: list[torch.Tensor], base: torch.Tensor, epsilon: float,
         boost: tuple[float, float] | None) -> torch.Tensor:
    check_shapes("ram", tensors, base)
    if not tensors:
        return base.clone()
    dtype = compute_dtype(base)
    b = base.to(dtype)
    deltas = torch.stack([t.to(dtype) - b for t in tensors]).view(len(tensors), -1)  # (M, N)
    counted = deltas.abs() > epsilon  # (M, N)
    deltas.mul_(counted)
    count = counted.sum(dim=0)  # (N,)
    scale = count.clamp(min=1).to(dtype).reciprocal().expand_as(deltas)  # (M, N): 1 / c
    if boost is not None:
        r, alpha = boost
        unique = count == 1  # (N,)
        n_shared = (counted & (count > 1)).sum(dim=1).to(dtype)  # (M,)
        n_unique = (counted & unique).sum(dim=1).to(dtype)  # (M,)
        lam = 1 + r * (n_shared / n_unique.clamp(min=epsilon)).clamp(0, alpha)  # (M,)
        scale = torch.where(unique, lam[:, None], scale)  # unique entries: lambda_i instead of 1
    merged = (deltas * scale).sum(dim=0)  # (N,)
    return merged.view(base.shape).add_(b).to(base.dtype)
