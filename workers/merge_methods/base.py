"""What a merge method is: a small pure function of tensors, described by its signature.

A kernel looks like::

    def linear(tensors: list[Tensor], *, weight: list[float], normalize: bool = True) -> Tensor

- ``tensors`` are the models' versions of one tensor (the base model excluded), all one shape.
- An argument ``base: Tensor`` makes a base model required; ``base: Tensor | None`` optional.
- Keyword arguments typed ``list[float]`` are per-model parameters (one value per tensor);
  ``float``/``int``/``bool`` ones are global. A default makes a parameter optional.
- ``lambda_`` is exposed to users as ``lambda`` (a Python keyword).
- An argument ``generator: torch.Generator | None`` marks the method as randomized; the caller
  seeds one per tensor (on the tensors' device) so results do not depend on the order
  tensors are merged in. A variant that fixes ``generator`` (to None) is deterministic.
- An argument ``out: torch.Tensor | None`` lets the caller pass the output's memory (a
  reused buffer, see `workers.safetensors_io.BufferPool`); the kernel then writes the result
  there and returns it. Other kernels allocate their output.
- A per-model argument's default is the scalar every model gets (``density: list[float] = 1.0``);
  `MergeMethod.__call__` broadcasts it, as it does a scalar passed for a per-model parameter.

Kernels never modify their inputs (passthrough may return its input itself), return the
inputs' dtype and shape, and raise `RecipeError` on mismatched shapes (`check_shapes`).
They compute in float32 (float64 stays float64; see `compute_dtype`).

`MergeMethod` derives the `ParamSpec`s from that signature once, when it is defined.
Variants (ties, dare_ties, ...) are the same kernel with other fixed options, built by
``MergeMethod.define(..., fixed={...})``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from search_spaces.errors import RecipeError
from search_spaces.methods import RULES, MethodRules

Scope = Literal["global", "per_model"]
BaseUse = Literal["required", "optional", "unused"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    scope: Scope
    required: bool
    default: Any = None


@dataclass(frozen=True)
class MergeMethod:
    name: str
    kernel: Callable[..., torch.Tensor]
    params: tuple[ParamSpec, ...]
    base: BaseUse
    randomized: bool
    reference: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    rules: MethodRules | None = None  # ranges and input contract (`search_spaces.methods`)
    writes_into: bool = False  # the kernel takes ``out``

    @classmethod
    def define(
        cls,
        name: str,
        kernel: Callable[..., torch.Tensor],
        *,
        reference: str = "",
        fixed: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> MergeMethod:
        """Build a method from a kernel's signature.

        ``fixed`` binds kernel arguments that are not user parameters for this variant
        (e.g. ``sparsification="magnitude"``); ``defaults`` overrides user-visible defaults.
        """
        fixed = dict(fixed or {})
        defaults = dict(defaults or {})
        hints = typing.get_type_hints(kernel)
        sig = inspect.signature(kernel)
        params: list[ParamSpec] = []
        base: BaseUse = "unused"
        randomized = False
        for arg in sig.parameters.values():
            if arg.name == "tensors":
                continue
            hint = hints.get(arg.name)
            if arg.name == "base":
                base = "optional" if _is_optional(hint) else "required"
                continue
            if arg.name in fixed:
                continue
            if arg.name == "generator":
                randomized = True
                continue
            if arg.name == "out":
                continue
            user_name = "lambda" if arg.name == "lambda_" else arg.name
            scope = _scope_of(hint, kernel.__name__, arg.name)
            default = defaults.get(user_name, arg.default)
            required = default is inspect.Parameter.empty
            params.append(ParamSpec(user_name, scope, required, None if required else default))
        unknown = set(fixed) - set(sig.parameters)
        if unknown:
            raise ValueError(f"{name}: fixed arguments {sorted(unknown)} are not in {kernel.__name__}'s signature")
        unknown = set(defaults) - {p.name for p in params}
        if unknown:
            raise ValueError(f"{name}: defaults {sorted(unknown)} are not parameters of {kernel.__name__}")
        rules = RULES.get(name)
        if rules is not None:
            _check_against_rules(name, params, base, rules)
        return cls(name, kernel, tuple(params), base, randomized, reference, fixed, rules,
                   writes_into="out" in sig.parameters)

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def check_parameter(self, name: str, scope: Scope, where: str) -> None:
        """Raise a one-line error if ``name`` is not a parameter of this method at ``scope``."""
        spec = self.param(name)
        if spec is None:
            known = ", ".join(p.name for p in self.params) or "none"
            raise RecipeError(f"{where}: '{name}' is not a parameter of {self.name} (known: {known})")
        if spec.scope == "global" and scope == "per_model":
            raise RecipeError(f"{where}: '{name}' is a global parameter of {self.name}; set it under top-level 'parameters'")

    def __call__(
        self,
        tensors: list[torch.Tensor],
        base: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        out: torch.Tensor | None = None,
        **params: Any,
    ) -> torch.Tensor:
        """Merge one tensor. ``params`` hold resolved scalars (global) and lists (per-model).

        A scalar given for a per-model parameter applies to every model. ``out`` is used
        only by a kernel that `writes_into` it.
        """
        unknown = set(params) - {p.name for p in self.params}
        if unknown:
            known = ", ".join(p.name for p in self.params) or "none"
            raise RecipeError(f"{self.name}: unknown parameter(s) {sorted(unknown)} (known: {known})")
        kwargs: dict[str, Any] = dict(self.fixed)
        for spec in self.params:
            if spec.name in params:
                value = params[spec.name]
            elif spec.required:
                raise RecipeError(f"{self.name}: parameter '{spec.name}' is required")
            else:
                value = spec.default
            if spec.scope == "per_model":
                if isinstance(value, list | tuple):
                    if len(value) != len(tensors):
                        raise RecipeError(f"{self.name}: parameter '{spec.name}' has {len(value)} values "
                                          f"for {len(tensors)} models")
                    value = list(value)
                else:
                    value = [value] * len(tensors)
            kwargs["lambda_" if spec.name == "lambda" else spec.name] = value
        if self.base == "required" and base is None:
            raise RecipeError(f"{self.name}: needs a base model")
        if self.base != "unused":
            kwargs["base"] = base
        if self.randomized:
            kwargs["generator"] = generator
        if self.writes_into:
            kwargs["out"] = out
        return self.kernel(tensors, **kwargs)


BLOCK = 1 << 16  # elements: the float32 blocks of a kernel (256 KiB each) stay in one core's L2 cache


def blocks(n: int, device: torch.device) -> list[slice]:
    """Slices covering ``range(n)``, for element-wise kernels that run every pass on one block.

    On the CPU each pass over a block reads what the previous pass left in cache, and the
    float32 scratch is a block, not a tensor (no page faults on fresh buffers). Other
    devices get one slice: their kernels are launched per op, so fewer ops is what counts.
    """
    size = block_width(n, device)
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def block_width(n: int, device: torch.device) -> int:
    """The elements of one block of `blocks`: ``BLOCK`` on the CPU, all ``n`` elsewhere."""
    return BLOCK if device.type == "cpu" else max(n, 1)


def weighted_sum(tensors: list[torch.Tensor], coefficients: list[float], *, like: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i coefficients_i * tensors_i``, in ``like``'s shape and dtype.

    A term whose coefficient is 0 is left out. Two terms of ``like``'s dtype whose coefficients
    sum to 1 are an interpolation: one ``torch.lerp``, which reads half precision as float32,
    computes ``a + c_b (b - a)`` in float32 and rounds once, in one vectorized pass (3x faster
    than the general sum on this project's CPUs: the general sum's mixed-dtype adds are not
    vectorized). Otherwise block by block (`blocks`): a float32 (float64 for float64)
    accumulator of one block, to which each input is added with its coefficient in one fused
    pass (torch's mixed-dtype add reads bfloat16 as float32, exactly), then converted into the
    output once. The blocks are views made by one ``split`` per tensor: the loop is a few torch
    calls per block, which matters when merge threads share the GIL.
    """
    if out is None:
        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)  # (*S)
    terms = [(t.reshape(-1), c) for t, c in zip(tensors, coefficients) if c != 0]
    out_flat = out.view(-1)  # (N,)
    if _is_interpolation(terms, out):
        (a, _), (b, c_b) = terms
        torch.lerp(a, b, c_b, out=out_flat)
        return out
    width = block_width(out_flat.numel(), like.device)
    acc_block = torch.empty(width, dtype=compute_dtype(like), device=like.device)  # (B,)
    columns = [t.split(width) for t, _ in terms]  # per input, its (B,) blocks
    for i, out_part in enumerate(out_flat.split(width)):
        acc = acc_block if len(out_part) == width else acc_block[: len(out_part)]
        acc.zero_()
        for column, (_, c) in zip(columns, terms):
            acc.add_(column[i], alpha=c)
        out_part.copy_(acc)
    return out


def _is_interpolation(terms: list[tuple[torch.Tensor, float]], out: torch.Tensor) -> bool:
    """Two terms, both in the output's dtype, with coefficients summing to 1 (to 1e-12: far
    below float32's precision, so ``1 - c_b`` stands for ``c_a``)."""
    return (len(terms) == 2 and all(t.dtype == out.dtype for t, _ in terms)
            and abs(terms[0][1] + terms[1][1] - 1.0) <= 1e-12)


def in_dtype(x: torch.Tensor, dtype: torch.dtype, scratch: torch.Tensor) -> torch.Tensor:
    """``x`` in ``dtype``: itself when it already is, else converted into the front of ``scratch``."""
    if x.dtype == dtype:
        return x
    return scratch[: x.numel()].copy_(x)


def check_shapes(method: str, tensors: list[torch.Tensor], base: torch.Tensor | None = None) -> None:
    """Raise `RecipeError` unless every tensor (and the base, if given) has the same shape."""
    shapes = [tuple(t.shape) for t in tensors] + ([tuple(base.shape)] if base is not None else [])
    if len(set(shapes)) > 1:
        where = " (last is the base model)" if base is not None else ""
        raise RecipeError(f"{method}: tensors have different shapes {shapes}{where}; "
                          "the models are not compatible for merging")


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype kernels compute in: float64 stays float64, everything else uses float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def per_model(values: Any, n: int, name: str) -> list[float]:
    """``values`` as one number per model (a scalar is broadcast), for kernels called directly."""
    if isinstance(values, list | tuple):
        if len(values) != n:
            raise RecipeError(f"parameter '{name}' has {len(values)} values for {n} models")
        return list(values)
    return [values] * n


def _check_against_rules(name: str, params: list[ParamSpec], base: BaseUse, rules: MethodRules) -> None:
    """The kernel's signature and the torch-free table must describe the same method."""
    ours = {p.name: p.scope for p in params}
    theirs = {k: r.scope for k, r in rules.params.items()}
    if ours != theirs or base != rules.base:
        raise ValueError(f"{name}: the kernel's parameters {ours} (base {base}) disagree with "
                         f"search_spaces.methods.RULES {theirs} (base {rules.base})")


def _is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _scope_of(hint: Any, kernel: str, arg: str) -> Scope:
    if typing.get_origin(hint) is list:
        return "per_model"
    if hint in (float, int, bool, str) or (_is_optional(hint) and set(typing.get_args(hint)) - {type(None)} <= {float, int, bool}):
        return "global"
    raise ValueError(f"{kernel}: cannot tell the scope of argument '{arg}' from its annotation {hint!r}")
