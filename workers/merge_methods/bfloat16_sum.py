"""A compiled weighted sum of bfloat16 tensors on the CPU: `base.weighted_sum`'s fast path.

The torch path of `weighted_sum` runs a few torch calls per block of 65,536 elements, and each
call takes the GIL: two merge threads spend much of their time waiting for each other, and
every input is converted to float32 in a pass of its own. This kernel is one numba loop per
tensor that never takes the GIL: it reads each bfloat16 input once, accumulates in float32
with fused multiply-adds (``acc = fma(x, c, acc)``, as torch's ``add_(x, alpha=c)`` does),
divides if asked, and rounds to bfloat16 to nearest even, as torch's vectorized conversion
does (a NaN becomes 0xFFFF). The result is bit for bit the torch path's
(`tests/workers/test_bfloat16_sum.py`): about 1.6x faster on one thread, 2x on two.

Loading it costs a process about half a second (numba's own start, then its on-disk cache;
a first compile, once per install, a few seconds), so `ready` loads it in a background
thread and says False until it is loaded: merges before that take the torch path, with the
same bits.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch

log = logging.getLogger(__name__)
_loaded = threading.Event()
_load_started = threading.Lock()  # held for good by the first `ready` call
_kernel = None  # bfloat16_sum_kernel.weighted_sum, once loaded


def applies(tensors: list[torch.Tensor], out: torch.Tensor) -> bool:
    """Whether this kernel can compute the sum: contiguous bfloat16 CPU tensors, the output too."""
    return all(t.dtype == torch.bfloat16 and t.device.type == "cpu" and t.is_contiguous() for t in [*tensors, out])


def ready(wait: bool = False) -> bool:
    """Whether the compiled kernel is loaded; the first call starts loading it in the background."""
    if _load_started.acquire(blocking=False):
        threading.Thread(target=_load, name="bfloat16-sum-load", daemon=True).start()
    if wait:
        _loaded.wait()
    return _kernel is not None


def bfloat16_weighted_sum(tensors: list[torch.Tensor], coefficients: list[float], out: torch.Tensor,
                          divide_by: float | None) -> torch.Tensor:
    """``sum_i coefficients_i * tensors_i`` (then ``/ divide_by``) into ``out``; needs `ready`.

    The inputs go by address (one compiled signature for any count): the caller's list keeps
    them alive for the call.
    """
    addresses = np.array([t.data_ptr() for t in tensors], dtype=np.uint64)
    weights = np.array(coefficients, dtype=np.float32)  # torch rounds an alpha to float32 too
    _kernel(addresses, weights, np.float32(divide_by or 1.0), divide_by is not None,
            out.view(-1).view(torch.uint16).numpy())
    return out


def _load() -> None:
    global _kernel
    try:
        from workers.merge_methods.bfloat16_sum_kernel import weighted_sum as kernel

        one = np.zeros(1, np.uint16)
        kernel(np.array([one.ctypes.data], dtype=np.uint64), np.ones(1, np.float32), np.float32(1), False, one)
        _kernel = kernel
    except Exception as error:  # noqa: BLE001 (the torch path gives the same bits, only slower)
        log.warning("the compiled bfloat16 weighted sum did not load (%s: %s); merges use torch",
                    type(error).__name__, error)
    finally:
        _loaded.set()
