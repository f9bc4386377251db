"""Time each merge kernel on one tensor, next to mergekit 0.1.5 when it is installed.

    python benchmarks/kernel_speed.py [--rows 4096] [--cols 4096] [--models 3] [--device cpu] [--dtype bfloat16]

A search calls these kernels for every tensor of every candidate, so per-tensor time
matters. Prints milliseconds per call (median of --repeat runs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from workers.merge_methods import METHODS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _params(name: str, n: int) -> dict:
    if name == "slerp":
        return {"t": 0.3}
    if name == "passthrough":
        return {"scale": [0.5]}
    params: dict = {"weight": [0.5] * n}
    if name not in ("linear", "task_arithmetic"):
        params["density"] = [0.4] * n
    return params


def _time(fn, repeat: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dtype, device = DTYPES[args.dtype], args.device
    gen = torch.Generator(device=device).manual_seed(0)
    base = torch.randn(args.rows, args.cols, generator=gen, device=device).to(dtype)
    models = [(base.float() + 0.01 * torch.randn(base.shape, generator=gen, device=device)).to(dtype)
              for _ in range(args.models)]
    try:
        from mergekit.merge_methods.api import merge_tensors
    except ImportError:
        merge_tensors = None

    print(f"{args.rows}x{args.cols} {args.dtype} on {device}, {args.models} models; ms per tensor")
    print(f"{'method':18s} {'ours':>9s} {'mergekit':>9s}")
    for name, method in METHODS.items():
        inputs = models[:1] if name in ("slerp", "passthrough") else models
        uses_base = method.base != "unused"
        params = _params(name, len(inputs))
        generator = torch.Generator(device=device).manual_seed(1) if method.randomized else None
        ours = _time(lambda: method(inputs, base if uses_base else None, generator=generator, **params),
                     args.repeat, device)
        theirs = float("nan")
        if merge_tensors is not None:
            tensors, base_index = (([base, *inputs], 0) if uses_base else (inputs, None))
            theirs = _time(lambda: merge_tensors(tensors, name, parameters=params, base_index=base_index),
                           args.repeat, device)
        print(f"{name:18s} {ours:9.1f} {theirs:9.1f}")


if __name__ == "__main__":
    main()
