"""WIDEN: merging by weight disentanglement (Yu et al., https://arxiv.org/abs/2408.03092).

Built so that a continued-pretraining model, whose weights moved far more than a fine-tune's,
does not drown the others: what counts is the rank of a change, not its size.

For a base W_0 and models W_t (t = 1..T), each 2-D or larger tensor seen as rows (the first
axis; a Linear weight's output units):

- Eq. 1, disentangle: W = m ⊙ D with m_r = ||W_r|| (row norms) and D_r = W_r / m_r;
- Eq. 2, divergence from the base: dm_t = |m_t - m_0|, dD_t = 1 - cos(D_t, D_0), per row;
- Eq. 3, rank within the tensor: R(dm_t)_r = rank_r(dm_t) / (rows - 1) in [0, 1]
  (0 for the smallest change; a one-row tensor ranks 0), the same for dD_t;
- Eq. 4, softmax across the models: S_t = exp(R_t) / sum_u exp(R_u), per row;
- Eq. 5, calibration: where S_t >= ``above_average_value_ratio`` · (1/T) (the mean score),
  S_t is set to ``score_calibration_value``, so an important change is kept in full;
- Eq. 6, merge: m = m_0 + sum_t S^m_t (m_t - m_0), D = D_0 + sum_t S^D_t (D_t - D_0), W = m ⊙ D.

A 1-D tensor (a norm or bias) has no direction to disentangle: its entries are the rows,
ranked by |x_t - x_0| and merged as x_0 + sum_t S_t (x_t - x_0). Defaults follow the
authors' MergeLM code (ratio 1.0, calibration 1.0).
"""

from __future__ import annotations

import torch

from workers.merge_methods.base import check_shapes, compute_dtype

_EPS = 1e-12


def widen(tensors: list[torch.Tensor], base: torch.Tensor, *, above_average_value_ratio: float = 1.0,
          score_calibration_value: float = 1.0) -> torch.Tensor:
    check_shapes("widen", tensors, base)
    if not tensors:
        return base.clone()
    calib = (above_average_value_ratio, score_calibration_value)
    dtype = compute_dtype(base)
    b = base.to(dtype)
    x = torch.stack([t.to(dtype) for t in tensors])  # (T, *S)
    if base.dim() < 2:
        delta = x.view(len(tensors), -1) - b.reshape(1, -1)  # (T, N)
        scores = widen_scores(delta.abs(), *calib)  # (T, N)
        return (scores * delta).sum(dim=0).view(base.shape).add_(b).to(base.dtype)
    rows = base.shape[0]
    b_rows = b.reshape(rows, -1)  # (R, C)
    x_rows = x.view(len(tensors), rows, -1)  # (T, R, C)
    m0 = torch.linalg.vector_norm(b_rows, dim=1)  # (R,)
    m = torch.linalg.vector_norm(x_rows, dim=2)  # (T, R)
    d0 = b_rows / m0.clamp_min(_EPS)[:, None]  # (R, C)
    d = x_rows / m.clamp_min(_EPS)[:, :, None]  # (T, R, C)
    dm = m - m0  # (T, R)
    dd = d - d0  # (T, R, C)
    cos = (d * d0).sum(dim=2)  # (T, R): both unit rows
    sm = widen_scores(dm.abs(), *calib)  # (T, R)
    sd = widen_scores(1 - cos, *calib)  # (T, R)
    magnitude = m0 + (sm * dm).sum(dim=0)  # (R,)
    direction = d0 + (sd[:, :, None] * dd).sum(dim=0)  # (R, C)
    return (magnitude[:, None] * direction).view(base.shape).to(base.dtype)


def widen_scores(divergence: torch.Tensor, above_average_value_ratio: float = 1.0,
                 score_calibration_value: float = 1.0) -> torch.Tensor:
    """(T, R) calibrated importance of each model's change at each row (Eq. 3-5)."""
    n_models, n_rows = divergence.shape
    ranks = divergence.argsort(dim=1, stable=True).argsort(dim=1).to(divergence.dtype)  # (T, R) 0 = smallest
    ranks = ranks / (n_rows - 1) if n_rows > 1 else torch.zeros_like(ranks)  # Eq. 3
    scores = torch.softmax(ranks, dim=0)  # Eq. 4, across models
    important = scores >= above_average_value_ratio / n_models  # Eq. 5
    return scores.masked_fill_(important, score_calibration_value)
