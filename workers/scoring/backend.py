"""What the harness needs from an inference backend: swap a candidate in, and an lm-eval LM."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from search_spaces.recipe import Recipe


@dataclass(frozen=True)
class LoadReport:
    """The outcome of writing one candidate's weights into the live model."""

    seconds: float
    non_finite: tuple[str, ...] = ()  # tensors holding NaN or inf (the candidate is unusable)


class Backend(Protocol):
    """One live model per worker; candidates are written into it in place.

    ``load`` raises for a recipe that cannot be merged into the live model (the harness turns
    that into an `EvalFailure`); it must leave the backend usable for the next candidate.
    """

    name: str

    @property
    def lm(self):  # an lm-eval `LM` over the live model
        ...

    def load(self, recipe: Recipe) -> LoadReport: ...

    def recover(self) -> None:
        """Release what a failed evaluation left behind (e.g. the CUDA cache after an OOM)."""

    def fatal(self, exc: BaseException) -> bool:
        """Whether ``exc`` left the backend unusable (see `EngineError`)."""

    def close(self) -> None: ...


def is_finite(tensor: torch.Tensor) -> bool:
    """No NaN and no inf in ``tensor``.

    A NaN or an inf anywhere makes the sum NaN or inf, so a finite sum proves the tensor
    finite with one cheap reduction (``isfinite(t).all()`` costs ten times more: it writes a
    mask as large as the tensor). Only a non-finite sum, which may also be an overflow of
    large finite values, pays for the exact check.
    """
    if not tensor.is_floating_point():
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(tensor).all())


def non_finite(named: Iterable[tuple[str, torch.Tensor]], limit: int = 5) -> tuple[str, ...]:
    """Names of (up to ``limit``) tensors that hold a NaN or an inf."""
    bad = []
    for name, tensor in named:
        if not is_finite(tensor):
            bad.append(name)
            if len(bad) >= limit:
                break
    return tuple(bad)


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error, whether raised as such or re-wrapped by an engine."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "outofmemoryerror" in text


def release_memory(device: str | torch.device) -> None:
    import gc

    gc.collect()
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
