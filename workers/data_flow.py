"""Layer paths as standard models: fold the input scales into the weights, exactly.

For a pre-norm residual transformer, attention and MLP see their input only through a
scale-invariant norm, so a path x_{k+1} = f_k(s_k x_k) equals a plain stack of the same layers
in which layer k's residual-branch outputs are multiplied by a_k = 1 / C_{k+1}, with
C_{k+1} = s_k C_k and C_0 = 1; the final norm absorbs the leftover scale C_n (exact but for
the norms' epsilon). Where the fold lands depends on the family (`LAYOUTS`):

- Llama, Mistral, Qwen2/3, Phi3, Gemma, Mixtral: the attention output projection and the MLP
  down projection (weight and any bias; Qwen2's biases sit on q/k/v, inside the normalised
  branch, and stay as they are);
- Gemma2/3: the post-attention and post-feedforward norms, which normalise a scale on o_proj
  away; Gemma stores them as (1 + w), so w becomes a (1 + w) - 1.

The result is a plain ``*ForCausalLM`` with ``num_hidden_layers`` = path length (no
``auto_map``, no custom code). A layer whose branch outputs are zero is an exact identity, so
a live model built once with the longest allowed path takes any shorter one by an in-place
weight swap (`DataFlowSources.apply`, `padded_reference`): no engine restart per candidate.

Per-layer attention types (``layer_types``: Gemma2's sliding/full alternation) follow the
position in the new stack, as in any stacked merge: position k takes the type of position
k mod L of model A, so a padded live model and an exported path agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search_spaces.data_flow import LayerPath, is_data_flow
from search_spaces.errors import RecipeError, UserError
from search_spaces.recipe import Recipe
from workers.checkpoint import Checkpoint, layer_of, with_layer
from workers.plan import TORCH_DTYPES, MergePlan, TensorMerge


class DataFlowError(UserError):
    """Two models or a path that data-flow search cannot use (one line, exit 2 in the CLI)."""


@dataclass(frozen=True)
class FamilyLayout:
    """Where a family's residual-branch outputs are, as regexes on the per-layer tensor name."""

    model_types: tuple[str, ...]
    scaled: tuple[str, ...]         # multiplied by a_k (weight and bias)
    one_plus: tuple[str, ...] = ()  # norm weights stored as (1 + w): w -> a_k (1 + w) - 1
    branch_outputs: tuple[str, ...] = (r"self_attn\.o_proj\.", r"mlp\..*down_proj|\.w2\.")
    """Tensors that, zeroed, make the layer an exact identity (the padding of a live model)."""


_PRE_NORM = (r"self_attn\.o_proj\.", r"mlp\.down_proj\.")
LAYOUTS: tuple[FamilyLayout, ...] = (
    FamilyLayout(("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"), _PRE_NORM),
    FamilyLayout(("mixtral", "qwen3_moe"), (r"self_attn\.o_proj\.",
                                            r"(mlp|block_sparse_moe)\.experts\.(\d+\.)?(down_proj|w2)")),
    FamilyLayout(("gemma2", "gemma3_text"), (),
                 (r"post_attention_layernorm\.weight$", r"post_feedforward_layernorm\.weight$")),
)


def layout_for(config: Mapping[str, Any], where: str = "model A") -> FamilyLayout:
    """The family's fold layout; a one-line `DataFlowError` for an unknown one."""
    model_type = config.get("model_type")
    for layout in LAYOUTS:
        if model_type in layout.model_types:
            return layout
    known = ", ".join(t for layout in LAYOUTS for t in layout.model_types)
    arch = (config.get("architectures") or ["?"])[0]
    raise DataFlowError(f"{where}: {arch} (model_type '{model_type}') has a layer layout data-flow search does "
                        f"not know, so its path scales cannot be folded (known: {known})")


def check_pair(a: Checkpoint, b: Checkpoint) -> FamilyLayout:
    """A and B must share the family, the hidden size and the layer shapes; one line otherwise."""
    layout = layout_for(a.config, f"model A ({a.path})")
    if a.architecture != b.architecture or a.config.get("model_type") != b.config.get("model_type"):
        raise DataFlowError(f"model B ({b.path}): architecture {b.architecture} differs from model A's "
                            f"{a.architecture}; a layer path needs one family")
    if a.config.get("hidden_size") != b.config.get("hidden_size"):
        raise DataFlowError(f"model B ({b.path}): hidden size {b.config.get('hidden_size')} differs from model A's "
                            f"{a.config.get('hidden_size')}; their layers cannot be stacked")
    layer_a = {with_layer(n, 0): a.shape(n) for n in a.index if layer_of(n) == 0}
    layer_b = {with_layer(n, 0): b.shape(n) for n in b.index if layer_of(n) == 0}
    if layer_a != layer_b:
        diff = sorted(set(layer_a.items()) ^ set(layer_b.items()))[0][0]
        raise DataFlowError(f"model B ({b.path}): layer tensor '{diff}' differs from model A's in name or shape")
    return layout


def fold_factors(path: LayerPath) -> list[float]:
    """a_k = 1 / C_{k+1}: what each placed layer's branch outputs are multiplied by."""
    return [1.0 / c for c in path.cumulative_scales()]


@dataclass(frozen=True)
class PathTensor:
    """One tensor of the folded model: where it comes from and how it is rescaled."""

    name: str
    model: str
    source: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    factor: float = 1.0
    how: str = "copy"  # "copy", "scale" (t * a) or "one_plus" (a (1 + t) - 1)


def plan_path(path: LayerPath, checkpoints: Mapping[str, Checkpoint], *, pad_to: int | None = None) -> list[PathTensor]:
    """Every tensor of the folded model, in checkpoint order: A's outside the stack, then the
    path's layers; with ``pad_to``, identity layers (branch outputs zeroed) up to that depth."""
    missing = [m for m in path.models if m not in checkpoints]
    if missing:
        raise RecipeError(f"{missing[0]}: not among this worker's models ({', '.join(checkpoints)})")
    a = checkpoints[path.model_a]
    layout = layout_for(a.config, f"model A ({a.path})")
    for m in path.models:
        if m != path.model_a:
            check_pair(a, checkpoints[m])
    if pad_to is not None and path.length > pad_to:
        raise DataFlowError(f"the path has {path.length} layers, more than the {pad_to} the engine was built for "
                            "(data_flow.max_path_length)")
    dtype = TORCH_DTYPES[path.dtype] if path.dtype else None
    scaled = [re.compile(p) for p in layout.scaled]
    one_plus = [re.compile(p) for p in layout.one_plus]
    zero = [re.compile(p) for p in layout.branch_outputs]
    out: list[PathTensor] = []
    layer_names = [n for n in a.index if layer_of(n) == 0]
    outside = [n for n in a.index if layer_of(n) is None]
    for name in outside:
        out.append(PathTensor(name, path.model_a, name, a.shape(name), dtype or a.index[name].dtype))
    for k, (step, factor) in enumerate(zip(path.steps, fold_factors(path))):
        ckpt = checkpoints[step.model]
        if step.layer >= ckpt.num_layers:
            raise RecipeError(f"slices[{k}]: layer {step.layer}, but {ckpt.name} has {ckpt.num_layers} layers")
        for name0 in layer_names:
            source = with_layer(name0, step.layer)
            suffix = name0.split(".layers.0.", 1)[1]
            how = ("scale" if any(p.search(suffix) for p in scaled)
                   else "one_plus" if any(p.search(suffix) for p in one_plus) else "copy")
            out.append(PathTensor(with_layer(name0, k), step.model, source, ckpt.shape(source),
                                  dtype or ckpt.index[source].dtype, factor if how != "copy" else 1.0, how))
    for k in range(path.length, pad_to or 0):
        for name0 in layer_names:
            suffix = name0.split(".layers.0.", 1)[1]
            how = "zero" if any(p.search(suffix) for p in zero) else "copy"
            out.append(PathTensor(with_layer(name0, k), path.model_a, name0, a.shape(name0),
                                  dtype or a.index[name0].dtype, 0.0, how))
    return out


def fold(entry: PathTensor, tensor: torch.Tensor) -> torch.Tensor:
    """The folded tensor (computed in float64, returned in the entry's dtype)."""
    if entry.how == "copy":
        return tensor.to(entry.dtype)
    if entry.how == "zero":
        return torch.zeros(entry.shape, dtype=entry.dtype, device=tensor.device)
    t = tensor.to(torch.float64)
    t = t * entry.factor if entry.how == "scale" else entry.factor * (1.0 + t) - 1.0
    return t.to(entry.dtype)


def path_config(path: LayerPath, config_a: Mapping[str, Any], depth: int | None = None) -> dict[str, Any]:
    """A's config for a plain stack of ``depth`` (default: the path's length) layers."""
    config = dict(config_a)
    depth = depth or path.length
    layers = int(config_a.get("num_hidden_layers") or 0)
    config["num_hidden_layers"] = depth
    types = config_a.get("layer_types")
    if isinstance(types, list) and types and layers:
        config["layer_types"] = [types[k % len(types)] for k in range(depth)]
    config.pop("auto_map", None)
    if path.dtype is not None:
        config["torch_dtype"] = config["dtype"] = path.dtype
    return config


def _stream(entries: Iterable[PathTensor], read: Callable[[str, str], torch.Tensor]) -> Iterator[tuple[PathTensor, torch.Tensor]]:
    for entry in entries:
        yield entry, fold(entry, read(entry.model, entry.source))


# -- export -----------------------------------------------------------------------------------
def write_path_model(recipe: Recipe | LayerPath, out: str | Path, *, pad_to: int | None = None,
                     max_shard_bytes: int | None = None, progress: bool = False, overwrite: bool = False,
                     card: dict[str, Any] | None = None, extra_files: dict[str, str] | None = None) -> Path:
    """Write the folded path as a Hugging Face model directory (shards, config, tokenizer, card),
    through the same atomic writer as every merge (`workers.export.write_model_dir`)."""
    from workers.export import DEFAULT_SHARD_BYTES, write_model_dir

    path = recipe if isinstance(recipe, LayerPath) else LayerPath.from_recipe(recipe)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --force to replace it)")
    checkpoints = {m: Checkpoint.open(m) for m in path.models}
    entries = plan_path(path, checkpoints, pad_to=pad_to)
    a = checkpoints[path.model_a]
    merges = [TensorMerge(e.name, e.shape, e.dtype, (), None, {}, 0) for e in entries]
    by_name = dict(zip((e.name for e in entries), merges))
    plan = MergePlan(path.to_recipe(), None, merges, path_config(path, a.config, pad_to), a,  # type: ignore[arg-type]
                     parents=list(path.models))
    extra_files = dict(extra_files or {})
    if "README.md" in extra_files and "## Layer path" not in extra_files["README.md"]:
        # a caller's own model card: the path is drawn in it all the same
        extra_files["README.md"] = extra_files["README.md"].rstrip("\n") + "\n\n" + draw_section(path) + "\n"
    readers = {m: c.reader() for m, c in checkpoints.items()}
    try:
        tensors = ((by_name[e.name], t) for e, t in _stream(entries, lambda m, n: readers[m].read(n)))
        return write_model_dir(plan, out, tensors, max_shard_bytes=max_shard_bytes or DEFAULT_SHARD_BYTES,
                               progress=progress, overwrite=overwrite, card=card, extra_files=extra_files)
    finally:
        for reader in readers.values():
            reader.close()


def draw_section(path: LayerPath) -> str:
    """The model card's "Layer path" section: slot, source model (A or B), layer, scale."""
    names = {m: f"{'AB'[i] if i < 2 else i}:{Path(m).name}" for i, m in enumerate(path.models)}
    return "\n".join(["## Layer path", "", "```text", path.draw(names), "```"])


def padded_reference(model_a: str, depth: int, out: str | Path) -> Path:
    """Model A padded with identity layers to ``depth``: what a live engine starts from, once per
    worker (never per candidate). Reused when ``out`` already holds it."""
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    a = Checkpoint.open(model_a)
    path = LayerPath(model_a, tuple(_steps_of(model_a, a.num_layers)))
    return write_path_model(path, out, pad_to=depth)


def _steps_of(model: str, layers: int):
    from search_spaces.data_flow import PathStep

    return [PathStep(model, i) for i in range(layers)]


# -- in-place swap into a live model ------------------------------------------------------------
class DataFlowSources:
    """A's and B's tensors held resident; writes any path into a live padded model in place.

    Duck-types `workers.resident.ResidentSources.apply`, so `workers.scoring.hf.HFBackend`
    takes it as its ``sources``.
    """

    def __init__(self, model_paths: list[str], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.checkpoints = {p: Checkpoint.open(p) for p in model_paths}
        if len(model_paths) >= 2:
            check_pair(self.checkpoints[model_paths[0]], self.checkpoints[model_paths[1]])
        self.tensors: dict[str, dict[str, torch.Tensor]] = {}
        for path, ckpt in self.checkpoints.items():
            with ckpt.reader() as reader:
                self.tensors[path] = {n: reader.read(n).to(self.device) for n in ckpt.index}

    @torch.no_grad()
    def apply(self, recipe: Recipe, model: torch.nn.Module) -> None:
        if not is_data_flow(recipe):
            raise RecipeError(f"merge_method '{recipe.merge_method}': this worker scores layer paths only")
        depth = int(model.config.num_hidden_layers)
        entries = plan_path(LayerPath.from_recipe(recipe), self.checkpoints, pad_to=depth)
        params = dict(model.named_parameters())
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        seen = set()
        for entry, tensor in _stream(entries, lambda m, n: self.tensors[m][n]):
            target = params.get(entry.name)
            if target is None:
                raise RecipeError(f"tensor '{entry.name}' of the path has no place in the live model")
            if target.shape != tensor.shape:
                raise RecipeError(f"tensor '{entry.name}': shape {list(tensor.shape)} does not fit the live "
                                  f"model's {list(target.shape)}")
            target.copy_(tensor)
            seen.add(entry.name)
        missing = [n for n in params if n not in seen and not (tied and n == "lm_head.weight")]
        if missing:
            raise RecipeError(f"the path has no tensor for the live model's '{missing[0]}'")
