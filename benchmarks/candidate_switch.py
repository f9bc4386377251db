"""Candidate switch time in a live engine against a fresh load, and evaluations per minute.

For each backend, one script measures:

- **in-place switch**: merging a candidate from resident source tensors straight into the live
  model: ``ResidentSources.apply`` for HF; for vLLM a ``collective_rpc`` into the engine's
  worker, which merges there and calls ``reload_weights`` (plus the prefix-cache reset);
- **fresh load**, what a tool without in-place swaps does per candidate: merge to a model
  directory on disk, then ``AutoModelForCausalLM.from_pretrained`` (HF) or start a new
  ``vllm.LLM`` on it (vLLM). The load alone is reported too;
- **evaluations per minute**: full ``Scorer.score`` calls (switch + lm-eval) on one task, each
  on a distinct recipe, so nothing is served from the cache.

Models are a synthetic Llama family (``--shape``), the embedded zoo (``--zoo``, task
``zoo_arith``), or your own (``--models base a b``, same architecture, with
``--include-path``/``--task`` naming an lm-eval task they can run).
Run (the ``__main__`` guard matters: vLLM spawns processes):

    .venv/bin/python benchmarks/candidate_switch.py [--shape small] [--backends hf,vllm]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and its test fixtures

from workers.offline import go_offline  # noqa: E402

go_offline()

SHAPES = {
    # head_dim 64 throughout: vLLM's CPU attention does not support 16.
    "tiny": dict(hidden=128, heads=2, kv_heads=2, intermediate=256, layers=2, vocab=64),
    "small": dict(hidden=512, heads=8, kv_heads=8, intermediate=1536, layers=8, vocab=4096),
    "medium": dict(hidden=1024, heads=16, kv_heads=16, intermediate=3072, layers=16, vocab=16384),
}
CPU_ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}


def recipes(paths: list[str], n: int, seed: int = 0):
    """``n`` distinct linear merges of ``paths`` (distinct weights, so distinct hashes)."""
    from search_spaces.recipe import Recipe

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        weights = [round(rng.uniform(0.1, 1.0), 4) for _ in paths]
        out.append(Recipe.from_dict({"merge_method": "linear", "models": [
            {"model": p, "parameters": {"weight": w}} for p, w in zip(paths, weights, strict=True)]}))
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def median(xs: list[float]) -> float:
    # Medians: the machines these run on are often shared, and one stall skews a mean.
    return statistics.median(xs) if xs else float("nan")


def switch_times(backend, cands) -> tuple[float, float]:
    """Median seconds of an in-place switch, seen by the caller and inside the backend."""
    outer, inner = [], []
    for recipe in cands:
        seconds, report = timed(backend.load, recipe)
        outer.append(seconds)
        inner.append(report.seconds)
    return median(outer), median(inner)


def prepare_models(args) -> tuple[list[str], str, str]:
    """(model paths, task include path, task name): the user's, or a synthetic family + tasks."""
    if args.models:
        if not args.include_path or not args.task:
            raise SystemExit("--models needs --include-path and --task too")
        return [str(Path(m).resolve()) for m in args.models], args.include_path, args.task
    if args.zoo:
        from workers.zoo import build_zoo

        zoo = build_zoo(progress=True)  # cached after the first build
        return ([str(p) for p in zoo.models.values()], str(zoo.tasks.include_path),
                args.task or zoo.tasks.skills["arith"])
    from tests.fixtures.synthetic_tasks import write_synthetic_tasks
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    root = Path(args.dir) / args.shape
    paths = [root / "base", root / "variant_0", root / "variant_1"]
    if not all((p / "config.json").exists() for p in paths):
        shutil.rmtree(root, ignore_errors=True)
        write_family(root, LlamaShape(**SHAPES[args.shape]), n_variants=2, seed=0)
    tasks = root / "tasks"
    if not (tasks / "syn_gen.yaml").exists():
        write_synthetic_tasks(tasks, paths[0])
    return [str(p) for p in paths], str(tasks), args.task or "syn_gen"


def bench_hf(paths, settings, task, args) -> dict:
    from transformers import AutoModelForCausalLM

    from workers.export import merge_to_disk
    from workers.scoring import Scorer

    out = {}
    start_s, scorer = timed(Scorer.create, paths, settings)
    out["start"] = start_s
    cands = recipes(paths, args.switches + args.evals + args.fresh, seed=1)
    scorer.backend.load(cands[0])  # warm-up
    out["switch"], _ = switch_times(scorer.backend, cands[: args.switches])
    sources = scorer.backend.sources
    out["merge"] = median([timed(lambda r: sum(1 for _ in sources.merged(r)), r)[0]
                           for r in cands[: args.switches]])

    write, load = [], []
    for i, recipe in enumerate(cands[-args.fresh:]):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            target = Path(tmp) / f"merged_{i}"
            write.append(timed(merge_to_disk, recipe, target, progress=False)[0])
            seconds, model = timed(AutoModelForCausalLM.from_pretrained, target, **dict(settings.engine_kwargs))
            load.append(seconds)
            del model
            gc.collect()
    out["fresh_write"] = median(write)
    out["fresh_load"] = median(load)
    out["fresh"] = median(load) + median(write)

    out.update(evals_per_minute(scorer, cands[args.switches: args.switches + args.evals], task))
    scorer.close()
    return out


def bench_vllm(paths, settings, task, args) -> dict:
    from vllm import LLM

    from workers.export import merge_to_disk
    from workers.scoring import Scorer

    out = {}
    start_s, scorer = timed(Scorer.create, paths, settings)
    out["start"] = start_s
    cands = recipes(paths, args.switches + args.evals + args.fresh, seed=2)
    scorer.backend.load(cands[0])  # warm-up
    # In the worker: merge + reload_weights; the rest is the RPC and the prefix-cache reset.
    out["switch"], out["in_worker"] = switch_times(scorer.backend, cands[: args.switches])
    out.update(evals_per_minute(scorer, cands[args.switches: args.switches + args.evals], task))

    write, load = [], []
    engine_kwargs = dict(settings.engine_kwargs) | {"seed": settings.seed}
    if settings.dtype:
        engine_kwargs["dtype"] = settings.dtype
    for i, recipe in enumerate(cands[-args.fresh:]):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            target = Path(tmp) / f"merged_{i}"
            write.append(timed(merge_to_disk, recipe, target, progress=False)[0])
            seconds, llm = timed(LLM, model=str(target), **engine_kwargs)
            load.append(seconds)
            del llm
            gc.collect()
    out["fresh_write"] = median(write)
    out["fresh_load"] = median(load)
    out["fresh"] = median(load) + median(write)
    scorer.close()
    return out


def evals_per_minute(scorer, cands, task) -> dict:
    from workers.scoring import TaskSpec

    spec = TaskSpec.from_dict(task)
    scorer.score(cands[0], [spec])  # warm-up: task loading, first generation
    seconds, results = timed(lambda: [scorer.score(r, [spec]) for r in cands[1:]])
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"a benchmark candidate failed: {failed[0].kind}: {failed[0].reason}")
    n_docs = len(results[0].tasks[0].samples)
    return {"evals_per_min": 60 * len(results) / seconds, "eval_seconds": seconds / len(results),
            "docs": n_docs, "evals": len(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--zoo", action="store_true", help="the embedded zoo's models and tasks (built if absent)")
    parser.add_argument("--models", nargs="+", help="your own models (base first) instead of a synthetic family")
    parser.add_argument("--include-path", help="folder of lm-eval task YAMLs (with --models)")
    parser.add_argument("--task", help="lm-eval task to evaluate (default: syn_gen)")
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--switches", type=int, default=10, help="in-place switches to average")
    parser.add_argument("--fresh", type=int, default=2, help="fresh loads to average")
    parser.add_argument("--evals", type=int, default=6, help="scored candidates for evals/minute (first is warm-up)")
    parser.add_argument("--engine-kwargs", default=json.dumps(CPU_ENGINE), help="vllm.LLM arguments, JSON")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "evolve-bench-switch"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="JSON and PNG go here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for HF (vLLM's CPU worker pins its own; on a busy machine, "
                             "more than one OpenMP thread per free core stalls badly)")
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)

    from workers.scoring import EvalSettings

    paths, include_path, task_name = prepare_models(args)
    task = {"name": task_name}
    n_params = _parameters(paths[0])
    source = "zoo" if args.zoo else paths[0] if args.models else f"synthetic {args.shape}"
    print(f"models: {len(paths)} x {n_params / 1e6:.1f}M parameters ({source}); task: {task_name}")
    results = {}
    for backend in args.backends.split(","):
        common = dict(backend=backend, include_path=(include_path,), dtype="float32")
        if backend == "vllm":
            settings = EvalSettings(**common, engine_kwargs=json.loads(args.engine_kwargs))
            results[backend] = bench_vllm(paths, settings, task, args)
        else:
            settings = EvalSettings(**common)
            results[backend] = bench_hf(paths, settings, task, args)
        print(f"{backend}: {json.dumps(results[backend])}", flush=True)

    print()
    print("in-place switch: merge from resident tensors + write into the live model")
    print("fresh: merge_to_disk (merge + write a model directory), then load it (from_pretrained / new vllm.LLM)")
    header = ["backend", "start s", "switch s", "fresh write s", "fresh load s", "fresh total s",
              "load/switch", "total/switch", "evals/min"]
    print("  ".join(f"{h:>13}" for h in header))
    for backend, r in results.items():
        row = [backend, f"{r['start']:.2f}", f"{r['switch']:.4f}", f"{r['fresh_write']:.3f}",
               f"{r['fresh_load']:.3f}", f"{r['fresh']:.3f}", f"{r['fresh_load'] / r['switch']:.1f}x",
               f"{r['fresh'] / r['switch']:.1f}x", f"{r['evals_per_min']:.1f}"]
        print("  ".join(f"{c:>13}" for c in row))
    if "hf" in results:
        print(f"hf: merging alone (no copy) takes {results['hf']['merge']:.4f} s of the switch")
    if "vllm" in results:
        print(f"vllm: {results['vllm']['in_worker']:.4f} s of the switch is inside the worker (merge + reload_weights)")
    print(f"evals/min: Scorer.score on {task['name']} ({next(iter(results.values()))['docs']} documents), "
          "switch included, distinct recipes")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": source, "parameters": n_params,
              "task": task_name, "threads": args.threads, "backends": results}
    (args.out / "candidate_switch.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "candidate_switch.png")
    print(f"results: {args.out / 'candidate_switch.json'}, {args.out / 'candidate_switch.png'}")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(report["backends"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, key, label, color in ((-0.2, "switch", "in-place switch", "tab:blue"),
                                      (0.2, "fresh", "merge to disk + fresh load", "tab:gray")):
        ax.bar([i + offset for i in range(len(backends))], [report["backends"][b][key] for b in backends], 0.4,
               label=label, color=color)
    ax.set_yscale("log")
    ax.set_xticks(range(len(backends)), backends)
    ax.set_ylabel("seconds per candidate (log)")
    ax.set_title(f"candidate switch, {report['parameters'] / 1e6:.0f}M-parameter models")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _parameters(path: str) -> int:
    from workers.checkpoint import Checkpoint

    ckpt = Checkpoint.open(path)
    total = 0
    for info in ckpt.index.values():
        n = 1
        for d in info.shape:
            n *= d
        total += n
    return total


if __name__ == "__main__":
    main()
