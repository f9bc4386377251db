"""Weighted average of the models' tensors (Wortsman et al., model soups)."""

import torch


def linear(tensors: list[torch.Tensor], *, weight: list[float], normalize: bool = True) -> torch.Tensor:
    stacked = torch.stack(tensors)  # (M, *shape)
    w = torch.tensor(weight, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    merged = (stacked * w).sum(dim=0)
    if normalize:
        merged = merged / w.sum()
    return merged
