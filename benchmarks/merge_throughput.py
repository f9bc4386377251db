"""Merge throughput and peak memory: evolve-merge against mergekit, same recipes, one script.

Generates (once, cached in ``--dir``) a synthetic multi-shard bfloat16 Llama family of 0.5B
parameters per model (400 MiB shards), then merges it with each recipe in a fresh subprocess
per tool, so every peak RSS is that run's own. Both tools run on the CPU with the same number
of threads and write safetensors shards of the same size to the same disk. Throughput is
input bytes read per second of wall time (each input tensor is read once by both tools);
each run also records its CPU seconds (user + system, all threads), which a shared
machine's load disturbs less than wall time.

The machine's limit is measured in the same script, also in a subprocess: a plain read of
the same input files plus a plain write of as many bytes as the merged model has, in 64 MiB
blocks, no merging. Inputs are in the page cache for every run (the limit run goes first
and warms it), so this is the limit of a warm-cache merge. The three run in rounds (limit,
ours, mergekit, then again), so a machine whose speed drifts moves all three alike.

``--memory`` sets the memory state each run starts from. On a VM that hands freed memory
back to its host (virtio-balloon free page reporting, about 2 s after it is freed), the
first touch of such a page costs a host fault: writing 1 GB into new pages took 0.27 s or
2.7 s on the same VM, depending on how long ago the memory had been freed; a tool that
imports torch before its timer starts waits longer than the plain read+write does. ``as-is``
(the default, and the only state before 2026-12-06) leaves it at that; ``warm`` makes each
run, after its imports, touch and free 3 GiB, so its new pages are ones the VM has, as on a
machine without a balloon; ``cold`` waits 5 s instead, so every new page is a host fault.
Peak RSS counts from the timer's start (``/proc/self/clear_refs``), so the 3 GiB are not in it. Run:

    .venv/bin/python benchmarks/merge_throughput.py [--methods ties,linear] [--layers 32] [--out benchmarks/results] [--name merge_throughput]

``--methods ties-like`` runs the methods that build and combine task vectors (ties, sce,
model_stock, ram, ramplus_tl, pcb, widen, ...). pcb and widen are not in mergekit: their
mergekit column is mergekit's ties on the same models, the nearest thing it can do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project and its test fixtures

# ~0.5B parameters per model: 32 layers of width 1024, MLP 3072, vocab 32000.
SHAPE = dict(hidden=1024, layers=32, heads=16, kv_heads=16, intermediate=3072, vocab=32000)
SHARD_BYTES = 400 * 2**20

RECIPES = {
    "linear": {"merge_method": "linear", "models": [
        {"model": "{a}", "parameters": {"weight": 0.6}}, {"model": "{b}", "parameters": {"weight": 0.4}}]},
    # weights that do not sum to 1: the base keeps a coefficient (-0.2), a sum of three terms.
    # Until 2026-12-07 they were 0.6 and 0.4, for which ours now leaves the base out and
    # interpolates, as for linear: that would measure linear twice.
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "{base}", "models": [
        {"model": "{a}", "parameters": {"weight": 0.7}}, {"model": "{b}", "parameters": {"weight": 0.5}}]},
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
DEFAULT_METHODS = ("linear", "task_arithmetic", "ties", "dare_ties", "slerp")
# Ours merges with min(4, cores) threads of single-threaded torch ops (workers.export);
# mergekit gets as many torch threads.
THREADS = max(1, min(4, os.cpu_count() or 1))
TOOLS = ("limit", "evolve", "mergekit")

WORKER = r"""
import json, resource, sys, time
tool, recipe_path, out, threads, memory = sys.argv[1:6]
shard = 400 * 2**20
def prepare():
    # after the imports, before the timer: every tool starts from the same memory state
    if memory == "warm":  # touch and free 3 GiB: the run's new pages are ones this VM just had
        import numpy
        numpy.ones(3 * 2**30, numpy.uint8)
    elif memory == "cold":  # long enough for a VM to return freed memory to its host
        time.sleep(5)
    with open("/proc/self/clear_refs", "w") as f:  # the peak RSS counts from here
        f.write("5")
def peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
if tool == "evolve":
    from search_spaces.recipe import Recipe
    from workers.export import merge_to_disk
    prepare()
    start, start_cpu = time.perf_counter(), cpu()
    merge_to_disk(Recipe.from_file(recipe_path), out, progress=False, max_shard_bytes=shard)
elif tool == "limit":
    import os, yaml
    from pathlib import Path
    recipe = yaml.safe_load(open(recipe_path))
    used = {m["model"] for m in recipe["models"]} | ({recipe["base_model"]} if "base_model" in recipe else set())
    files = sorted(f for p in used for f in Path(p).glob("*.safetensors"))
    out_bytes = sum(f.stat().st_size for f in Path(recipe["models"][0]["model"]).glob("*.safetensors"))
    block = bytearray(64 * 2**20)
    os.makedirs(out)
    prepare()
    start, start_cpu = time.perf_counter(), cpu()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(block):
                pass
    with open(os.path.join(out, "plain.bin"), "wb", buffering=0) as fh:
        left = out_bytes
        while left > 0:
            left -= fh.write(memoryview(block)[:min(left, len(block))])
else:
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    config = MergeConfiguration.model_validate(yaml.safe_load(open(recipe_path)))
    options = MergeOptions(copy_tokenizer=True, quiet=True, write_model_card=False, random_seed=0,
                           out_shard_size=shard, num_threads=int(threads))
    prepare()
    start, start_cpu = time.perf_counter(), cpu()
    run_merge(config, out, options=options)
elapsed, cpu_seconds = time.perf_counter() - start, cpu() - start_cpu
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu_seconds,
                  "peak_rss_bytes": peak_rss()}))
"""


def make_family(root: Path, layers: int) -> dict[str, Path]:
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


def run_one(tool: str, recipe: dict, work: Path, memory: str) -> dict:
    recipe_path = work / f"{tool}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = work / f"out-{tool}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    proc = subprocess.run([sys.executable, "-c", WORKER, tool, str(recipe_path), str(out), str(THREADS), memory],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result


def resolve(method: str, paths: dict[str, Path]) -> dict:
    text = json.dumps(RECIPES[method])
    for key, path in paths.items():
        text = text.replace("{" + key + "}", str(path))
    return json.loads(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "evolve-merge" / "bench-models",
                        help="where the synthetic family is generated (once) and merges are written")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated, or ties-like, or all")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of one run per tool; the fastest is kept")
    parser.add_argument("--memory", choices=("as-is", "warm", "cold"), default="as-is",
                        help="the memory state each timed run starts from (see the module docstring)")
    parser.add_argument("--layers", type=int, default=SHAPE["layers"], help="fewer layers: a smaller family")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="JSON and PNG go here")
    parser.add_argument("--name", default="merge_throughput", help="file name of the JSON and PNG, without suffix")
    args = parser.parse_args()
    methods = {"ties-like": TIES_LIKE, "all": tuple(RECIPES)}.get(args.methods) or tuple(args.methods.split(","))
    paths = make_family(args.dir / f"family-{args.layers}", args.layers)
    os.sync()  # a family just generated must not be flushing to disk while we time
    work = args.dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    console.print(f"{THREADS} merge threads per tool")
    load_before = os.getloadavg()  # a shared machine's load moves wall times: it goes in the report
    table = Table(title=f"merge throughput (input GB/s) and peak RSS, same recipes, {THREADS} threads each")
    for col in ("method", "limit GB/s", "evolve GB/s", "mergekit GB/s", "speed ratio", "of limit", "evolve peak RSS",
                "mergekit peak RSS", "RSS ratio"):
        table.add_column(col)
    rows = []
    for method in methods:
        recipe = resolve(method, paths)
        size = input_bytes(recipe, paths)
        recipes = {tool: recipe for tool in TOOLS}
        if method in NOT_IN_MERGEKIT:
            recipes["mergekit"] = resolve(NOT_IN_MERGEKIT[method], paths)
        run_one("limit", recipe, work, args.memory)  # warms the page cache with the inputs, for all three
        # rounds of one run per tool, so a machine that drifts (load, page cache) moves all three alike
        runs = {tool: [] for tool in TOOLS}
        for _ in range(args.repeats):
            for tool in TOOLS:
                runs[tool].append(run_one(tool, recipes[tool], work, args.memory))
        best = {}
        for tool in TOOLS:
            best[tool] = min(runs[tool], key=lambda r: r["seconds"])
            best[tool]["gbps"] = size / best[tool]["seconds"] / 1e9
            best[tool]["all_seconds"] = [r["seconds"] for r in runs[tool]]
        ours, theirs, limit = best["evolve"], best["mergekit"], best["limit"]
        rows.append({"method": method, "input_bytes": size, "limit": limit, "evolve": ours, "mergekit": theirs,
                     "speed_ratio": ours["gbps"] / theirs["gbps"],
                     "rss_ratio": ours["peak_rss_bytes"] / theirs["peak_rss_bytes"],
                     "fraction_of_limit": ours["gbps"] / limit["gbps"],
                     # each round's own ratio: the limit and ours a few seconds apart
                     "median_round_fraction_of_limit": statistics.median(
                         lim["seconds"] / our["seconds"] for lim, our in zip(runs["limit"], runs["evolve"]))})
        label = f"{method} (mergekit: {NOT_IN_MERGEKIT[method]})" if method in NOT_IN_MERGEKIT else method
        table.add_row(label, f"{limit['gbps']:.2f}", f"{ours['gbps']:.2f}", f"{theirs['gbps']:.2f}", f"{rows[-1]['speed_ratio']:.2f}x",
                      f"{rows[-1]['fraction_of_limit']:.0%}",
                      f"{ours['peak_rss_bytes'] / 2**30:.2f} GiB", f"{theirs['peak_rss_bytes'] / 2**30:.2f} GiB",
                      f"{rows[-1]['rss_ratio']:.2f}")
        # CPU seconds (user + system, all threads) move less than wall time on a shared machine
        console.print(f"{method}: limit {limit['seconds']:.1f} s, evolve {ours['seconds']:.1f} s "
                      f"({ours['cpu_seconds']:.1f} CPU s), mergekit {theirs['seconds']:.1f} s "
                      f"({theirs['cpu_seconds']:.1f} CPU s); of the limit, round by round: median "
                      f"{rows[-1]['median_round_fraction_of_limit']:.0%}")
    console.print(table)
    from tests.fixtures.synthetic_models import LlamaShape

    shape = {**SHAPE, "layers": args.layers}
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": THREADS, "cpus": os.cpu_count(),
              "memory": args.memory,
              "shape": shape, "parameters_per_model": param_count(LlamaShape(**shape)), "dtype": "bfloat16",
              "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]}, "methods": rows}
    console.print(f"load average (1 min): {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
    json_path.write_text(json.dumps(report, indent=2))
    plot(report, png_path)
    console.print(f"results: {json_path}, {png_path}")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["methods"]
    x = range(len(rows))
    fig, (speed, rss) = plt.subplots(1, 2, figsize=(10, 4))
    for offset, tool, color in ((-0.2, "evolve", "tab:blue"), (0.2, "mergekit", "tab:gray")):
        speed.bar([i + offset for i in x], [r[tool]["gbps"] for r in rows], 0.4, label=tool, color=color)
        rss.bar([i + offset for i in x], [r[tool]["peak_rss_bytes"] / 2**30 for r in rows], 0.4, label=tool, color=color)
    speed.scatter(list(x), [r["limit"]["gbps"] for r in rows], marker="_", s=900, color="tab:red",
                  label="plain read+write", zorder=3)
    speed.set_ylabel("input GB/s")
    rss.set_ylabel("peak RSS (GiB)")
    for ax in (speed, rss):
        ax.set_xticks(list(x), [r["method"] for r in rows], rotation=20)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"merge of {report['parameters_per_model'] / 1e9:.2f}B-parameter bf16 models, "
                 f"{report['threads']} threads each")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


console = Console(width=150)

if __name__ == "__main__":
    main()
