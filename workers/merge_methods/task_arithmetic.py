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

Steps 3-6 run block by block (`base.blocks`), and so does step 1 when nothing is sparsified:
only a sparsification, whose mask depends on the whole task vector, needs whole float32
task vectors in memory.

With neither a sparsification nor a sign election (plain task arithmetic, with or without
``normalize`` and ``lambda``) the merge is linear in the inputs, ``b + sum_i c_i (x_i - b) =
(1 - sum_i c_i) b + sum_i c_i x_i`` with ``c_i = lambda * weight_i / divisor``, and is
computed so (`base.weighted_sum`): one fused multiply-add per input into a float32 block, about
half the passes of forming the task vectors (1.4x faster per kernel). With one model, or with
the base's coefficient 0 (weights summing to 1 / lambda), two terms remain: one interpolation. The two forms differ
only by float32 rounding (about 1e-7 of the largest term); a bfloat16 output moves by one ulp
where the exact value lies that close to a rounding midpoint, which bf16 fine-tunes, whose
deltas are multiples of the grid, make common (about 3% of entries).
"""

from __future__ import annotations

import torch

from workers.merge_methods.base import (
    blocks,
    check_shapes,
    compute_dtype,
    in_dtype,
    per_model,
    weighted_sum,
)
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
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    name = "task arithmetic" if sparsification is None else f"task arithmetic ({sparsification})"
    check_shapes(name, tensors, base)
    if sparsification is not None and sparsification not in SPARSIFICATIONS:
        raise ValueError(f"{name}: unknown sparsification '{sparsification}' (known: {SPARSIFICATIONS})")
    if consensus is not None and consensus not in CONSENSUS:
        raise ValueError(f"{name}: unknown consensus '{consensus}' (known: {CONSENSUS})")
    n_models = len(tensors)
    if n_models == 0:
        return base.clone() if out is None else out.copy_(base)
    weight = per_model(weight, n_models, "weight")
    if sparsification is None and consensus is None:
        total = sum(weight)
        divisor = total if normalize and abs(total) >= 1e-8 else 1.0
        coefficients = [lambda_ * w / divisor for w in weight]
        return weighted_sum([*tensors, base], [*coefficients, 1.0 - sum(coefficients)], like=base, out=out)
    dtype = compute_dtype(base)
    n = base.numel()
    base_flat = base.reshape(-1)  # (N,)
    parts = blocks(n, base.device)
    width = parts[0].stop - parts[0].start if parts else 0
    scratch = torch.empty(width, dtype=dtype, device=base.device)  # (B,) the base block, converted
    if sparsification is None:
        deltas, block_deltas = None, torch.empty((n_models, width), dtype=dtype, device=base.device)  # (M, B)
    else:
        deltas = _sparse_deltas(tensors, base, parts, scratch, sparsification, rescale, generator,
                                density=per_model(density, n_models, "density"),
                                gamma=per_model(gamma, n_models, "gamma"),
                                epsilon=per_model(epsilon, n_models, "epsilon"))  # (M, N)
    summed = torch.empty(width, dtype=dtype, device=base.device)  # (B,) reused: no fresh pages per block
    w = torch.tensor(weight, dtype=dtype, device=base.device).view(n_models, 1)  # (M, 1)
    if out is None:
        out = torch.empty(base.shape, dtype=base.dtype, device=base.device)  # (*S)
    out_flat = out.view(-1)  # (N,)
    for part in parts:
        b = in_dtype(base_flat[part], dtype, scratch)  # (B,)
        if deltas is None:
            d = _block_deltas(tensors, part, b, block_deltas[:, : part.stop - part.start])
        else:
            d = deltas[:, part]  # (M, B)
        d.mul_(w)
        merged = _combine(d, w, weight, consensus, normalize, summed[: part.stop - part.start])  # (B,)
        if lambda_ != 1:
            merged.mul_(lambda_)
        out_flat[part].copy_(merged.add_(b))
    return out


def _sparse_deltas(tensors: list[torch.Tensor], base: torch.Tensor, parts: list[slice], scratch: torch.Tensor,
                   sparsification: str, rescale: bool, generator: torch.Generator | None, *,
                   density: list[float], gamma: list[float], epsilon: list[float]) -> torch.Tensor:
    """(M, N) the sparsified task vectors; whole tensors, since a mask depends on all entries."""
    n_models = len(tensors)
    deltas = torch.empty((n_models, *base.shape), dtype=scratch.dtype, device=base.device)  # (M, *S)
    flat, base_flat = deltas.view(n_models, -1), base.reshape(-1)  # (M, N), (N,)
    for part in parts:
        _block_deltas(tensors, part, in_dtype(base_flat[part], scratch.dtype, scratch), flat[:, part])
    for i in range(n_models):
        mask = keep_mask(deltas[i], sparsification, density[i], gamma=gamma[i],
                         epsilon=epsilon[i], generator=generator)  # (*S) bool, or None
        apply_mask_(deltas[i], mask, rescale)
    return flat


def _block_deltas(tensors: list[torch.Tensor], part: slice, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(M, B) x_i - b over one block, into ``out``; a bfloat16 x_i is read as float32 by the
    subtraction itself (torch's mixed-dtype kernel: exactly a conversion, then the float32
    subtraction, in one pass)."""
    for i, tensor in enumerate(tensors):
        torch.sub(tensor.reshape(-1)[part], b, out=out[i])
    return out


def _combine(d: torch.Tensor, w: torch.Tensor, weight: list[float], consensus: str | None,
             normalize: bool, out: torch.Tensor) -> torch.Tensor:
    """(B,) the sum of the weighted deltas ``d`` (M, B), consumed, over one block, in ``out``."""
    if consensus is None:
        merged = sum_rows(d, out)  # (B,)
        if normalize:
            total = sum(weight)
            merged.div_(total if abs(total) >= 1e-8 else 1.0)
        return merged
    # Keep d_i where it has the elected sign s (= ±1): there d_i * s > 0, and zeros never
    # count. With r_i = relu(d_i * s), sum_i kept d_i = s * sum_i r_i exactly (s * s = 1),
    # and the kept models at an entry are those with r_i > 0: no bool masks, fewer passes.
    elected = _elected_sign(d, consensus)  # (B,) of ±1
    d.mul_(elected).clamp_(min=0)  # (M, B) r_i
    merged = sum_rows(d, out).mul_(elected)  # (B,)
    if normalize:
        kept = d.sign_()  # (M, B) 1 where kept, else 0
        divisor = (w.view(1, -1) @ kept).view(-1)  # (B,) weights of the kept models
        merged.div_(divisor.add_(divisor.clone().eq_(0)))  # an entry no model keeps divides by 1
    return merged


def sum_rows(d: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(B,) ``d.sum(dim=0)`` of ``d`` (M, B), bit for bit, into ``out``, at about half its cost.

    On one CPU thread, below 16 rows and in whole vectors of columns, torch's outer-dimension
    sum adds the rows one by one onto +0 (its cascade starts a new level every 16 rows; a
    partial vector is summed in another order). There chained adds and a final +0, which
    only turns a -0 into +0, give the same bits; anywhere else torch sums.
    """
    rows, n = d.shape
    if d.device.type != "cpu" or torch.get_num_threads() != 1 or not 2 <= rows < 16 or n % 64:
        return torch.sum(d, dim=0, out=out)
    torch.add(d[0], d[1], out=out)
    for row in d[2:]:
        out.add_(row)
    return out.add_(0.0)


def _elected_sign(deltas: torch.Tensor, method: str) -> torch.Tensor:
    """(*S) of ±1: TIES' sign election over the weighted deltas (M, *S); a tie elects +1."""
    votes = deltas.sum(dim=0) if method == "sum" else deltas.sign().sum(dim=0)  # (*S)
    # In place in the float dtype: several times cheaper than a bool tensor and torch.where.
    return votes.ge_(0).mul_(2).sub_(1)  # exactly ±1
