"""Merge throughput and peak memory: evolve-merge against mergekit, same recipes, one script.

Generates (once, cached) a synthetic multi-shard Llama family of at least 0.5B parameters per
model, then merges it with each recipe in a fresh subprocess per tool, so every peak RSS is
that run's own. Throughput is input bytes read per second of wall time (each input tensor is
read once by both tools). Run:

    .venv/bin/python benchmarks/merge_throughput.py [--dir /tmp/evolve-bench] [--methods ties,linear] [--layers 32]

``--methods ties-like`` runs the methods that build and combine task vectors (ties, sce,
model_stock, ram, ramplus_tl, pcb, widen, ...). pcb and widen are not in mergekit: their
mergekit column is mergekit's ties on the same models, the nearest thing it can do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

# ~0.5B parameters per model: 32 layers of width 1024, MLP 3072, vocab 32000.
SHAPE = dict(hidden=1024, layers=32, heads=16, kv_heads=16, intermediate=3072, vocab=32000)
SHARD_BYTES = 400 * 2**20

RECIPES = {
    "linear": {"merge_method": "linear", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6}}, {"model": "{b}", "parameters": {"weight": 0.4}}]},
    "ties": {"merge_method": "ties", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": "{b}", "parameters": {"weight": 0.4, "density": 0.5}}],
        "parameters": {"normalize": True}},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": "{b}", "parameters": {"weight": 0.4, "density": 0.5}}]},
    "slerp": {"merge_method": "slerp", "base_model": "{a}", "models": [{"model": "{a}"}, {"model": "{b}"}],
              "parameters": {"t": 0.3}},
    "sce": {"merge_method": "sce", "base_model": "{base}", "models": [{"model": "{a}"}, {"model": "{b}"}],
            "parameters": {"select_topk": 0.5}},
    "model_stock": {"merge_method": "model_stock", "base_model": "{base}",
                    "models": [{"model": "{a}"}, {"model": "{b}"}]},
    "ram": {"merge_method": "ram", "base_model": "{base}", "models": [{"model": "{a}"}, {"model": "{b}"}]},
    "ramplus_tl": {"merge_method": "ramplus_tl", "base_model": "{base}", "models": [{"model": "{a}"}, {"model": "{b}"}]},
    "nuslerp": {"merge_method": "nuslerp", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6}}, {"model": "{b}", "parameters": {"weight": 0.4}}]},
    "multislerp": {"merge_method": "multislerp", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6}}, {"model": "{b}", "parameters": {"weight": 0.4}}]},
    "karcher": {"merge_method": "karcher", "models": [{"model": "{a}"}, {"model": "{b}"}]},
    "nearswap": {"merge_method": "nearswap", "base_model": "{base}", "models": [{"model": "{a}"}],
                 "parameters": {"t": 0.001}},
    "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": "{base}", "models": [{"model": "{a}"}]},
    "pcb": {"merge_method": "pcb", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"drop_ratio": 0.5}}, {"model": "{b}", "parameters": {"drop_ratio": 0.5}}]},
    "widen": {"merge_method": "widen", "base_model": "{base}", "models": [{"model": "{a}"}, {"model": "{b}"}]},
}
TIES_LIKE = ("ties", "dare_ties", "sce", "model_stock", "ram", "ramplus_tl", "pcb", "widen")
NOT_IN_MERGEKIT = {"pcb": "ties", "widen": "ties"}  # compared with mergekit's nearest method

WORKER = r"""
import json, resource, sys, time
tool, recipe_path, out = sys.argv[1:4]
start = time.perf_counter()
if tool == "evolve":
    from search_spaces.recipe import Recipe
    from workers.export import merge_to_disk
    merge_to_disk(Recipe.from_file(recipe_path), out, progress=False)
else:
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    config = MergeConfiguration.model_validate(yaml.safe_load(open(recipe_path)))
    run_merge(config, out, options=MergeOptions(copy_tokenizer=True, quiet=True, write_model_card=False,
                                                random_seed=0, out_shard_size=400 * 2**20))
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_family(root: Path, layers: int) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from tests.fixtures.synthetic_models import LlamaShape, write_model

    dims = {**SHAPE, "layers": layers}
    marker = root / f"family-{zlib.crc32(json.dumps(dims, sort_keys=True).encode()):08x}.done"
    paths = {"base": root / "base", "a": root / "a", "b": root / "b"}
    if marker.exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    shape = LlamaShape(**dims)
    console.print(f"generating a 3-model family of {param_count(shape) / 1e9:.2f}B parameters each in {root} ...")
    write_model(paths["base"], shape, seed=0, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES)
    write_model(paths["a"], shape, seed=1, base_seed=0, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES)
    write_model(paths["b"], shape, seed=2, base_seed=0, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES)
    marker.write_text("ok")
    return paths


def param_count(shape) -> int:
    total = 0
    for _, s in shape.tensors():
        n = 1
        for d in s:
            n *= d
        total += n
    return total


def input_bytes(recipe: dict, paths: dict[str, Path]) -> int:
    used = {m["model"] for m in recipe["models"]} | ({recipe["base_model"]} if "base_model" in recipe else set())
    return sum(f.stat().st_size for p in used for f in Path(p).glob("*.safetensors"))


def run_one(tool: str, recipe: dict, work: Path) -> dict:
    recipe_path = work / f"{tool}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = work / f"out-{tool}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    proc = subprocess.run([sys.executable, "-c", WORKER, tool, str(recipe_path), str(out)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "evolve-bench")
    parser.add_argument("--methods", default=",".join(RECIPES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--layers", type=int, default=SHAPE["layers"], help="fewer layers: a smaller family")
    args = parser.parse_args()
    if args.methods == "ties-like":
        args.methods = ",".join(TIES_LIKE)
    paths = make_family(args.dir / f"family-{args.layers}", args.layers)
    work = args.dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    table = Table(title="merge throughput (input GB/s) and peak RSS, same recipes")
    for col in ("method", "evolve GB/s", "mergekit GB/s", "speed ratio", "evolve peak RSS", "mergekit peak RSS", "RSS ratio"):
        table.add_column(col)
    rows = []
    for method in args.methods.split(","):
        recipe = json.loads(json.dumps(RECIPES[method]).replace("{base}", str(paths["base"]))
                            .replace("{a}", str(paths["a"])).replace("{b}", str(paths["b"])))
        size = input_bytes(recipe, paths)
        best = {}
        for tool in ("evolve", "mergekit"):
            tool_recipe = recipe
            if tool == "mergekit" and method in NOT_IN_MERGEKIT:
                tool_recipe = json.loads(json.dumps(RECIPES[NOT_IN_MERGEKIT[method]]).replace("{base}", str(paths["base"]))
                                         .replace("{a}", str(paths["a"])).replace("{b}", str(paths["b"])))
            runs = [run_one(tool, tool_recipe, work) for _ in range(args.repeats)]
            best[tool] = min(runs, key=lambda r: r["seconds"])
            best[tool]["gbps"] = size / best[tool]["seconds"] / 1e9
        ours, theirs = best["evolve"], best["mergekit"]
        rows.append({"method": method, "input_bytes": size, "evolve": ours, "mergekit": theirs})
        label = f"{method} (mergekit: {NOT_IN_MERGEKIT[method]})" if method in NOT_IN_MERGEKIT else method
        table.add_row(label, f"{ours['gbps']:.2f}", f"{theirs['gbps']:.2f}", f"{ours['gbps'] / theirs['gbps']:.2f}x",
                      f"{ours['peak_rss_bytes'] / 2**30:.2f} GiB", f"{theirs['peak_rss_bytes'] / 2**30:.2f} GiB",
                      f"{ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}")
    console.print(table)
    (args.dir / "merge_throughput.json").write_text(json.dumps(rows, indent=2))


console = Console()

if __name__ == "__main__":
    main()
