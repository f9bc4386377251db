"""The numba code of `bfloat16_sum`, in a module of its own: importing it starts numba.

Module-level functions, so numba's on-disk cache (``cache=True``) finds them again.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

CHUNK = 4096  # float32 accumulator elements: 16 KiB, stays in L1 while every input is added


@intrinsic
def _fma(typingctx, x, c, acc):  # noqa: ARG001 (numba's intrinsic signature)
    """``x * c + acc`` rounded once: the instruction torch's vectorized add uses."""
    return types.float32(types.float32, types.float32, types.float32), lambda ctx, b, sig, args: b.fma(*args)


@intrinsic
def _bits_to_float(typingctx, bits):  # noqa: ARG001
    return types.float32(types.uint32), lambda ctx, b, sig, args: b.bitcast(args[0], ctx.get_value_type(types.float32))


@intrinsic
def _float_to_bits(typingctx, value):  # noqa: ARG001
    return types.uint32(types.float32), lambda ctx, b, sig, args: b.bitcast(args[0], ctx.get_value_type(types.uint32))


@intrinsic
def _uint16_pointer(typingctx, address):  # noqa: ARG001
    pointer = types.CPointer(types.uint16)
    return pointer(types.uint64), lambda ctx, b, sig, args: b.inttoptr(args[0], ctx.get_value_type(pointer))


@njit(inline="always")
def _from_bfloat16(bits):  # pragma: no cover (compiled)
    return _bits_to_float(np.uint32(bits) << np.uint32(16))


@njit(inline="always")
def _to_bfloat16(value):  # pragma: no cover (compiled)
    """Round to nearest even, as torch's vectorized conversion does; a NaN becomes 0xFFFF."""
    bits = _float_to_bits(value)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(0xFFFF) if value != value else np.uint16(rounded)


@njit(nogil=True, cache=True, boundscheck=False)
def weighted_sum(addresses, coefficients, divisor, divide, out):  # pragma: no cover (compiled)
    """out = bf16((sum_k fma(input_k, coefficients[k])) [/ divisor]); input k is ``out.size``
    bfloat16 bits at ``addresses[k]``, ``out`` is uint16 bits."""
    n = out.shape[0]
    acc_chunk = np.empty(CHUNK, np.float32)
    for start in range(0, n, CHUNK):  # slices indexed from 0: loops LLVM vectorizes
        stop = min(n, start + CHUNK)
        acc = acc_chunk[: stop - start]
        for k in range(addresses.shape[0]):
            x = carray(_uint16_pointer(addresses[k]), (n,))[start:stop]
            c = coefficients[k]
            if k == 0:  # fma onto +0, as torch's add_ onto a zeroed accumulator
                for j in range(acc.shape[0]):
                    acc[j] = _fma(_from_bfloat16(x[j]), c, np.float32(0.0))
            else:
                for j in range(acc.shape[0]):
                    acc[j] = _fma(_from_bfloat16(x[j]), c, acc[j])
        merged = out[start:stop]
        if divide:
            for j in range(acc.shape[0]):
                merged[j] = _to_bfloat16(acc[j] / divisor)
        else:
            for j in range(acc.shape[0]):
                merged[j] = _to_bfloat16(acc[j])
