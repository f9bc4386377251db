"""Streaming merge to a Hugging Face model directory, written atomically.

Tensors are mapped from their shards one at a time (the next ones while the current one
merges), merged, and streamed into pre-laid-out shards in a temporary folder beside the
destination. Only a complete directory is renamed into place, so a crash or a bad input
never leaves a half-written model, and peak memory is a few tensors, not a model. Outputs
live in buffers reused from tensor to tensor (`BufferPool`), not in fresh memory each time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from search_spaces.data_flow import LayerPath, is_data_flow
from search_spaces.errors import UserError
from search_spaces.recipe import Recipe
from workers.checkpoint import TOKENIZER_FILES
from workers.plan import MergePlan, TensorMerge, TensorRef, execute, open_checkpoints, plan_merge
from workers.safetensors_io import BufferPool, OutputTensor, ShardedWriter, TensorReader

DEFAULT_SHARD_BYTES = 2 * 2**30
COPIED_FILES = ("generation_config.json",)


def merge_to_disk(recipe: Recipe, out: str | Path, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                  progress: bool = True, overwrite: bool = False, card: dict[str, Any] | None = None,
                  extra_files: dict[str, str] | None = None) -> Path:
    """Merge ``recipe`` into a new model directory ``out``; returns its path.

    ``extra_files`` (name -> text) are written beside the weights, inside the atomic rename.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --force to replace it)")
    if is_data_flow(recipe):  # a layer path, folded into a plain model (workers.data_flow)
        from workers.data_flow import write_path_model

        # mergekit has no input scales: a "mergekit.yaml" of a layer path would not reproduce it
        extra = {k: v for k, v in (extra_files or {}).items() if k != "mergekit.yaml"}
        return write_path_model(recipe, out, max_shard_bytes=max_shard_bytes, progress=progress,
                                overwrite=overwrite, card=card, extra_files=extra)
    checkpoints = open_checkpoints(recipe)
    plan = plan_merge(recipe, checkpoints)
    readers = {path: ckpt.reader() for path, ckpt in checkpoints.items()}
    try:
        tensors = _stream_merges(plan, readers)
        return write_model_dir(plan, out, tensors, max_shard_bytes=max_shard_bytes, progress=progress,
                               overwrite=overwrite, card=card, extra_files=extra_files)
    finally:
        for reader in readers.values():
            reader.close()


def _stream_merges(plan: MergePlan, readers: Mapping[str, TensorReader],
                   threads: int | None = None) -> Iterator[tuple[TensorMerge, torch.Tensor]]:
    """Merged tensors in plan order, computed by a few threads ahead of the writer.

    Each thread maps one merge's inputs (`TensorReader.map`: no copy) and merges them with
    single-threaded torch ops; at most ``2 * threads`` merges are in flight (a thread done
    early starts the next one while the writer waits on a slower one), which bounds memory
    to a few tensors. On few cores this beats torch's own intra-op threads on these
    element-wise kernels, and it overlaps reading, merging and writing. Inputs are released
    once merged, a yielded tensor (and an input it is: passthrough) once the consumer asks
    for the next one (it has been written by then).
    """
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    buffers = BufferPool()

    def job(merge: TensorMerge) -> tuple[torch.Tensor, list[TensorRef]]:
        refs = [*merge.inputs, *([merge.base] if merge.base else [])]
        tensors = [readers[r.model].map(r.name) for r in refs]
        out = buffers.take(merge.dtype, merge.shape) if plan.method.writes_into else None
        inputs, base = (tensors[:-1], tensors[-1]) if merge.base else (tensors, None)
        merged = execute(merge, plan.method, inputs, base, out)
        if out is not None and not _same_memory(out, merged):
            buffers.give(out)
        kept = []  # inputs the merged tensor is: released after it is written
        for ref, tensor in zip(refs, tensors):
            if _same_memory(tensor, merged):
                kept.append(ref)
            else:
                readers[ref.model].release(ref.name)
        return merged, kept

    todo = iter(plan.merges)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="merge") as pool:
            ahead = deque((m, pool.submit(job, m)) for m in islice(todo, 2 * threads))
            while ahead:
                merge, future = ahead.popleft()
                merged, kept = future.result()
                following = next(todo, None)
                if following is not None:
                    ahead.append((following, pool.submit(job, following)))
                yield merge, merged
                if buffers.lent(merged):
                    buffers.give(merged)
                for ref in kept:
                    readers[ref.model].release(ref.name)
    finally:
        torch.set_num_threads(previous)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def write_model_dir(plan: MergePlan, out: Path, tensors: Iterator[tuple[TensorMerge, torch.Tensor]], *,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True, overwrite: bool = False,
                    card: dict[str, Any] | None = None, extra_files: dict[str, str] | None = None) -> Path:
    """Write weights, config, tokenizer and model card into a temp folder, then rename it to ``out``."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the model directory should not be
    try:
        layout = [OutputTensor(m.name, m.dtype, tuple(m.shape)) for m in plan.merges]
        total = sum(t.nbytes for t in layout)
        with ExitStack() as stack:
            bar = stack.enter_context(_progress(progress))
            task = bar.add_task("merging", total=total)
            writer = stack.enter_context(ShardedWriter(tmp, layout, max_shard_bytes, metadata={"merged_by": "evolve-merge"}))
            for merge, tensor in tensors:
                writer.write(merge.name, tensor)
                bar.advance(task, tensor.numel() * tensor.element_size())
        _write_metadata(plan, tmp, card)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if out.exists():
            if not overwrite:
                raise UserError(f"{out}: already exists (pass --force to replace it)")
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_metadata(plan: MergePlan, directory: Path, card: dict[str, Any] | None) -> None:
    (directory / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
    source = plan.reference.path
    for name in TOKENIZER_FILES + COPIED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, directory / name)
    (directory / "evolve_recipe.yaml").write_text(plan.recipe.to_yaml())
    (directory / "README.md").write_text(model_card(plan.recipe, plan.parents, card or {}))


def model_card(recipe: Recipe, parents: list[str], extra: dict[str, Any]) -> str:
    """A Hugging Face model card that carries the recipe, its parents and any scores."""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, evolve-merge]",
        "---",
        f"# Merged model ({recipe.merge_method})",
        "",
        f"Made by evolve-merge from {len(parents)} model(s). Recipe hash `{recipe.hash}`.",
        "",
        "## Parents",
        *[f"- `{p}`" for p in parents],
        "",
    ]
    if is_data_flow(recipe):  # the layer path, drawn: slot, source model, layer, scale
        from workers.data_flow import draw_section

        lines += [draw_section(LayerPath.from_recipe(recipe)), ""]
    if extra.get("scores"):
        lines += ["## Scores", "", "| task | metric | value |", "|---|---|---|"]
        for task, metrics in extra["scores"].items():
            for metric, value in metrics.items():
                lines.append(f"| {task} | {metric} | {value:.4f} |" if isinstance(value, float) else f"| {task} | {metric} | {value} |")
        lines.append("")
    for key, value in extra.items():
        if key != "scores":
            lines += [f"## {key}", "", "```", yaml.safe_dump(value, sort_keys=False).strip(), "```", ""]
    lines += ["## Recipe", "", "```yaml", recipe.to_yaml().strip(), "```", ""]
    return "\n".join(lines)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)
