"""Task arithmetic over the zoo, for the hand-set reference merges of docs/zoo.md.

Deliberately independent of ``workers.merge_methods`` so the zoo can check itself;
the semantics are mergekit's ``task_arithmetic`` (no normalisation):

    merged = base + sum_i w_i(tensor) * (expert_i - base)

A weight is either one float for every tensor of that expert, or a mapping from tensor kind
(see :func:`tensor_kind`) to float, with ``"*"`` as the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Weight = float | Mapping[str, float]


def tensor_kind(name: str) -> str:
    """A coarse grouping of Llama tensor names: embed, lm_head, norm, attn, mlp."""
    if "embed_tokens" in name:
        return "embed"
    if "lm_head" in name:
        return "lm_head"
    if "norm" in name:
        return "norm"
    if "self_attn" in name:
        return "attn"
    if "mlp" in name:
        return "mlp"
    return "other"


def _weight_for(weight: Weight, name: str) -> float:
    if isinstance(weight, Mapping):
        kind = tensor_kind(name)
        return float(weight.get(kind, weight.get("*", 0.0)))
    return float(weight)


def task_arithmetic(
    base: Mapping[str, torch.Tensor],
    experts: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, Weight],
) -> dict[str, torch.Tensor]:
    unknown = set(weights) - set(experts)
    if unknown:
        raise KeyError(f"no expert named {sorted(unknown)}; have {sorted(experts)}")
    merged = {}
    for name, b in base.items():
        acc = b.detach().clone().float()
        for expert, w in weights.items():
            wt = _weight_for(w, name)
            if wt:
                acc += wt * (experts[expert][name].float() - b.float())
        merged[name] = acc
    return merged
