"""PCB-merging: Parameter Competition Balancing (Du et al., https://arxiv.org/abs/2410.02396).

For task vectors tau_i = x_i - b (i = 1..n), each flattened to D entries, with
Norm(v) = (v - min v) / (max v - min v) (0 for a constant v) and Softmax over the D entries:

- Eq. 2, intra-balancing (importance within a task vector):
  beta_intra_i = Softmax(n · Norm(tau_i ⊙ tau_i));
- Eq. 3, inter-balancing (agreement with every task vector, itself included):
  beta_inter_i = sum_j Softmax(Norm(tau_i ⊙ tau_j));
- Eq. 4: beta_i = beta_intra_i ⊙ beta_inter_i;
- Eq. 5-6, drop: keep the D - floor(drop_ratio_i · D) entries of largest beta_i (ties by
  position), beta_hat_i = m_i ⊙ beta_i;
- Eq. 7, rescale: tau_m = sum_i beta_hat_i ⊙ tau_i / sum_i beta_hat_i (0 where no model is kept);
- Eq. 8: merged = b + lambda · tau_m.

As mergekit does for TIES, the balancing is computed per tensor, not over the whole model's
flattened parameters. ``drop_ratio`` is per model (the paper uses one value for all); the
scores are formed from the exponent's shift-invariant form (softmax(z) = exp(z - max z) / sum),
so they never overflow.
"""

from __future__ import annotations

import torch

from search_spaces.errors import RecipeError
from workers.merge_methods.base import check_shapes, compute_dtype, per_model
from workers.merge_methods.sparsify import largest_k


def pcb(tensors: list[torch.Tensor], base: torch.Tensor, *, drop_ratio: list[float] = 0.9,
        lambda_: float = 1.0) -> torch.Tensor:
    check_shapes("pcb", tensors, base)
    n = len(tensors)
    if n == 0:
        return base.clone()
    drop_ratio = per_model(drop_ratio, n, "drop_ratio")
    for r in drop_ratio:
        if not 0 <= r < 1:
            raise RecipeError(f"pcb: drop_ratio {r} is outside [0, 1)")
    dtype = compute_dtype(base)
    b = base.to(dtype)
    tau = torch.stack([t.to(dtype) - b for t in tensors]).view(n, -1)  # (n, D)
    d = tau.shape[1]
    if d == 0:
        return base.clone()
    beta = balance_scores(tau)  # (n, D)
    for i, r in enumerate(drop_ratio):
        beta[i].mul_(largest_k(beta[i], d - int(r * d)))  # Eq. 5-6
    total = beta.sum(dim=0)  # (D,)
    merged = (beta * tau).sum(dim=0) / torch.where(total > 0, total, 1.0)  # Eq. 7
    return merged.mul_(lambda_).view(base.shape).add_(b).to(base.dtype)  # Eq. 8


def balance_scores(tau: torch.Tensor) -> torch.Tensor:
    """(n, D) beta_i = beta_intra_i ⊙ beta_inter_i (Eq. 2-4) for the task vectors tau (n, D)."""
    n = tau.shape[0]
    intra = torch.softmax(n * _minmax(tau * tau), dim=1)  # (n, D), Eq. 2
    inter = torch.zeros_like(tau)
    for i in range(n):
        for j in range(i, n):
            s = torch.softmax(_minmax(tau[i] * tau[j]), dim=0)  # (D,) symmetric in i, j
            inter[i] += s
            if j != i:
                inter[j] += s
    return intra.mul_(inter)  # Eq. 4


def _minmax(v: torch.Tensor) -> torch.Tensor:
    """Min-max normalization along the last axis; a constant row becomes 0."""
    low = v.amin(dim=-1, keepdim=True)
    span = v.amax(dim=-1, keepdim=True) - low
    return (v - low) / torch.where(span > 0, span, 1.0)
