"""The one place where merge methods are registered, by name, with their references.

Names, parameters and defaults follow mergekit 0.1.5. The task-arithmetic family is one
kernel configured eight ways:

| method           | sparsification     | sign consensus | normalize | rescale | extra     |
|------------------|--------------------|----------------|-----------|---------|-----------|
| task_arithmetic  | none               | no             | false     | false   |           |
| ties             | magnitude          | sum            | true      | false   |           |
| dare_ties        | random             | sum            | false     | true    |           |
| dare_linear      | random             | no             | false     | true    |           |
| breadcrumbs      | magnitude_outliers | no             | false     | false   | gamma     |
| breadcrumbs_ties | magnitude_outliers | sum            | false     | false   | gamma     |
| della            | della_magprune     | sum            | true      | true    | epsilon   |
| della_linear     | della_magprune     | no             | false     | true    | epsilon   |

All of them: weight (per model, required), density (per model, 1.0), lambda (1.0),
int8_mask (false, ignored); gamma (per model, 0.01), epsilon (per model, 0.15).

The other mergekit 0.1.5 methods (model_stock, sce, nuslerp, multislerp, karcher, nearswap,
arcee_fusion, ram, ramplus_tl) are one kernel each; pcb and widen are seed-paper methods
mergekit lacks. Valid ranges and input contracts live in `search_spaces.methods.RULES`
(torch-free, so the search space can read them); `MergeMethod.define` checks each kernel's
signature against that table at import.
"""

from __future__ import annotations

from collections.abc import Iterable

from search_spaces.errors import RecipeError
from search_spaces.methods import RULES
from workers.merge_methods.arcee_fusion import arcee_fusion
from workers.merge_methods.base import MergeMethod
from workers.merge_methods.karcher import karcher
from workers.merge_methods.linear import linear
from workers.merge_methods.model_stock import model_stock
from workers.merge_methods.multislerp import multislerp
from workers.merge_methods.nearswap import nearswap
from workers.merge_methods.nuslerp import nuslerp
from workers.merge_methods.passthrough import passthrough
from workers.merge_methods.pcb import pcb
from workers.merge_methods.ram import ram, ramplus_tl
from workers.merge_methods.sce import sce
from workers.merge_methods.slerp import slerp
from workers.merge_methods.task_arithmetic import task_arithmetic
from workers.merge_methods.widen import widen


def _task_arithmetic_variant(
    name: str,
    reference: str,
    *,
    sparsification: str | None,
    consensus: str | None,
    normalize: bool,
    rescale: bool,
) -> MergeMethod:
    fixed: dict = {"sparsification": sparsification, "consensus": consensus}
    if sparsification != "magnitude_outliers":
        fixed["gamma"] = 0.0  # breadcrumbs only
    if sparsification != "della_magprune":
        fixed["epsilon"] = 0.0  # della only
    if sparsification not in ("random", "della_magprune"):
        fixed["generator"] = None  # deterministic
    return MergeMethod.define(
        name, task_arithmetic, reference=reference, fixed=fixed,
        defaults={"normalize": normalize, "rescale": rescale},
    )


def all_methods() -> list[MergeMethod]:
    ta = _task_arithmetic_variant
    dare, breadcrumbs, della = (
        "https://arxiv.org/abs/2311.03099", "https://arxiv.org/abs/2312.06795", "https://arxiv.org/abs/2406.11617"
    )
    return [
        MergeMethod.define("linear", linear, reference="https://arxiv.org/abs/2203.05482"),
        MergeMethod.define("slerp", slerp, reference="https://doi.org/10.1145/325165.325242"),
        MergeMethod.define("passthrough", passthrough, reference="https://arxiv.org/abs/2403.13257"),
        ta("task_arithmetic", "https://arxiv.org/abs/2212.04089",
           sparsification=None, consensus=None, normalize=False, rescale=False),
        ta("ties", "https://arxiv.org/abs/2306.01708",
           sparsification="magnitude", consensus="sum", normalize=True, rescale=False),
        ta("dare_ties", dare, sparsification="random", consensus="sum", normalize=False, rescale=True),
        ta("dare_linear", dare, sparsification="random", consensus=None, normalize=False, rescale=True),
        ta("breadcrumbs", breadcrumbs,
           sparsification="magnitude_outliers", consensus=None, normalize=False, rescale=False),
        ta("breadcrumbs_ties", breadcrumbs,
           sparsification="magnitude_outliers", consensus="sum", normalize=False, rescale=False),
        ta("della", della, sparsification="della_magprune", consensus="sum", normalize=True, rescale=True),
        ta("della_linear", della, sparsification="della_magprune", consensus=None, normalize=False, rescale=True),
        MergeMethod.define("model_stock", model_stock, reference="https://arxiv.org/abs/2403.19522"),
        MergeMethod.define("sce", sce, reference="https://arxiv.org/abs/2408.07990"),
        MergeMethod.define("nuslerp", nuslerp, reference="https://github.com/arcee-ai/mergekit"),
        MergeMethod.define("multislerp", multislerp,
                           reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
        MergeMethod.define("karcher", karcher, reference="https://arxiv.org/abs/2603.04972"),
        MergeMethod.define("nearswap", nearswap,
                           reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"),
        MergeMethod.define("arcee_fusion", arcee_fusion, reference="https://arcee.ai"),
        MergeMethod.define("ram", ram, reference="https://arxiv.org/abs/2601.13572"),
        MergeMethod.define("ramplus_tl", ramplus_tl, reference="https://arxiv.org/abs/2601.13572"),
        MergeMethod.define("pcb", pcb, reference="https://arxiv.org/abs/2410.02396"),
        MergeMethod.define("widen", widen, reference="https://arxiv.org/abs/2408.03092"),
    ]


def build_registry(methods: Iterable[MergeMethod]) -> dict[str, MergeMethod]:
    """Methods by name; a name registered twice is an error, never a silent overwrite."""
    registry: dict[str, MergeMethod] = {}
    for method in methods:
        if method.name in registry:
            raise ValueError(f"merge method '{method.name}' registered twice")
        registry[method.name] = method
    return registry


METHODS: dict[str, MergeMethod] = build_registry(all_methods())
if set(METHODS) != set(RULES):
    raise ValueError(f"search_spaces.methods.RULES and the registry disagree on {sorted(set(METHODS) ^ set(RULES))}")


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"merge_method: unknown method '{name}' (known: {', '.join(sorted(METHODS))})") from None
