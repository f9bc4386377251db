"""Generalized task arithmetic: the one kernel behind task_arithmetic, TIES, DARE, Breadcrumbs, DELLA.

For a base tensor b and model tensors x_i (Ilharco et al., https://arxiv.org/abs/2212.04089):

1. task vectors d_i = x_i - b;
2. optionally sparsify each d_i (see `sparsify`), with ``density`` (and ``gamma`` or
   ``epsilon``) per model, and ``rescale`` to keep its L1 norm;
3. weight them: d_i <- weight_i * d_i;
4. optionally elect a sign per entry (TIES, https://arxiv.org/abs/2306.01708): the sign of
   sum_i d_i (``consensus="sum"``, zero counts as positive) or of the count of signs
   (``"count"``), and keep only the weighted deltas that share it (zeros never do);
5. sum them; with ``normalize``, divide by the sum of the weights, where a sign was elected
   only over the models kept at that entry (an entry no model keeps divides by 1, and a
   weight sum below 1e-8 in magnitude is treated as 1);
6. scale by ``lambda`` and add back to b.

The registry configures the variants by fixing ``sparsification`` and ``consensus`` and
setting each variant's mergekit defaults for ``normalize`` and ``rescale``. ``density``
is accepted by every variant (mergekit does the same) but only used where something is
sparsified. ``int8_mask`` is accepted for mergekit compatibility and ignored: it only
changes how mergekit stores the sign mask.
"""

from __future__ import annotations

import torch

from workers.merge_methods.base import check_shapes, compute_dtype, per_model
from workers.merge_methods.sparsify import METHODS as SPARSIFICATIONS
from workers.merge_methods.sparsify import apply_mask_, keep_mask

CONSENSUS = ("sum", "count")


def task_arithmetic(
    tensors: list[torch.Tensor],
    base: torch.Tensor,
    *,
    weight: list[float],
    density: list[float] = 1.0,  # per-model; the scalar default applies to every model
    gamma: list[float] = 0.01,
    epsilon: list[float] = 0.15,
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    int8_mask: bool = False,
    sparsification: str | None = None,
    consensus: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    name = "task arithmetic" if sparsification is None else f"task arithmetic ({sparsification})"
    check_shapes(name, tensors, base)
    if sparsification is not None and sparsification not in SPARSIFICATIONS:
        raise ValueError(f"{name}: unknown sparsification '{sparsification}' (known: {SPARSIFICATIONS})")
    if consensus is not None and consensus not in CONSENSUS:
        raise ValueError(f"{name}: unknown consensus '{consensus}' (known: {CONSENSUS})")
    n_models = len(tensors)
    if n_models == 0:
        return base.clone()
    weight = per_model(weight, n_models, "weight")
    dtype = compute_dtype(base)
    base_c = base.to(dtype)  # (*S); no copy when already in the compute dtype

    deltas = torch.empty((n_models, *base.shape), dtype=dtype, device=base.device)  # (M, *S)
    for i, tensor in enumerate(tensors):
        torch.sub(tensor, base_c, out=deltas[i])  # promotes to the compute dtype, no extra copy
    if sparsification is not None:
        density = per_model(density, n_models, "density")
        gamma = per_model(gamma, n_models, "gamma")
        epsilon = per_model(epsilon, n_models, "epsilon")
        for i in range(n_models):
            mask = keep_mask(deltas[i], sparsification, density[i], gamma=gamma[i],
                             epsilon=epsilon[i], generator=generator)  # (*S) bool, or None
            apply_mask_(deltas[i], mask, rescale)

    w = torch.tensor(weight, dtype=dtype, device=base.device).view(-1, *([1] * base.dim()))  # (M, 1...)
    deltas.mul_(w)

    if consensus is not None:
        # Keep d_i where it has the elected sign s (= ±1): there d_i * s > 0, and zeros never
        # count. With r_i = relu(d_i * s), sum_i kept d_i = s * sum_i r_i exactly (s * s = 1),
        # and the kept models at an entry are those with r_i > 0: no bool masks, fewer passes.
        elected = _elected_sign(deltas, consensus)  # (*S) of ±1
        deltas.mul_(elected).clamp_(min=0)  # (M, *S) r_i
        merged = deltas.sum(dim=0).mul_(elected)  # (*S)
        if normalize:
            kept = deltas.sign_().view(n_models, base.numel())  # (M, N) 1 where kept, else 0
            divisor = (w.view(1, n_models) @ kept).view(base.shape)  # (*S) weights of the kept models
            merged.div_(divisor.masked_fill_(divisor == 0, 1))
    else:
        merged = deltas.sum(dim=0)  # (*S)
        if normalize:
            total = sum(weight)
            merged.div_(total if abs(total) >= 1e-8 else 1.0)
    del deltas
    if lambda_ != 1:
        merged.mul_(lambda_)
    return merged.add_(base_c).to(base.dtype)


def _elected_sign(deltas: torch.Tensor, method: str) -> torch.Tensor:
    """(*S) of ±1: TIES' sign election over the weighted deltas (M, *S); a tie elects +1."""
    votes = deltas.sum(dim=0) if method == "sum" else deltas.sign().sum(dim=0)  # (*S)
    return torch.where(votes >= 0, 1.0, -1.0).to(deltas.dtype)
