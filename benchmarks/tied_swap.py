"""In-place vLLM swap on a tied-embedding checkpoint: what the output-head rebuild costs (issue 12).

With ``tie_word_embeddings`` the engine's ``lm_head`` shares the embedding's Parameter but, on
CPU, computes logits through a packed copy of it; the fix re-runs the head's
``process_weights_after_loading`` after every ``reload_weights`` (`vllm_extension`). This
measures, on one live engine and distinct linear merges of a synthetic tied Llama family:

- **rebuild on**: ``VLLMBackend.load`` as the product runs it (merge + reload + head rebuild);
- **rebuild off**: the same with the worker's follower list emptied, i.e. the swap before the
  fix (fast, and wrong: the head keeps the start-up weights);
- **rebuild alone**: the head's post-processing by itself, timed inside the worker;
- **fresh engine**: what an exact swap without the fix would cost: ``merge_to_disk`` plus a new
  ``vllm.LLM`` on the directory.

Medians over ``--repeats`` (the machines are shared; one stall skews a mean). The engine core
runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the benchmark can toggle the
rebuild through ``collective_rpc`` with a function; the swap does the same work either way.

    .venv/bin/python benchmarks/tied_swap.py [--shape small|vocab32k] [--repeats 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vLLM is imported
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from candidate_switch import CPU_ENGINE, SHAPES, median, recipes, timed  # noqa: E402

TIED_SHAPES = {
    "small": SHAPES["small"],  # vocab 4096: the head is ~7% of the parameters
    # A Llama-3.2-1B-like head share: vocab 32000 x hidden 1024 tied, 4 layers.
    "vocab32k": dict(hidden=1024, heads=16, kv_heads=4, intermediate=2816, layers=4, vocab=32000),
}


def _followers(worker) -> int:
    return len(worker._merge_followers)


def _disable_rebuild(worker) -> int:
    worker._saved_followers, worker._merge_followers = worker._merge_followers, []
    return len(worker._saved_followers)


def _enable_rebuild(worker) -> int:
    worker._merge_followers = worker._saved_followers
    return len(worker._merge_followers)


def _rebuild_seconds(worker) -> float:
    from workers.scoring.vllm_extension import _reprocess

    start = time.perf_counter()
    _reprocess(worker._merge_followers, worker.vllm_config)
    return time.perf_counter() - start


def swap(backend, recipe) -> tuple[float, float]:
    """Seconds of one swap: seen by the caller (incl. prefix-cache reset) and inside the worker."""
    seconds, report = timed(backend.load, recipe)
    return seconds, report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(TIED_SHAPES), default="small")
    parser.add_argument("--repeats", type=int, default=10, help="swaps per mode")
    parser.add_argument("--fresh", type=int, default=2, help="fresh engines to time")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "evolve-bench-tied"))
    args = parser.parse_args()

    from vllm import LLM

    from tests.fixtures.synthetic_models import LlamaShape, write_family
    from workers.export import merge_to_disk
    from workers.scoring.spec import EvalSettings
    from workers.scoring.vllm_backend import VLLMBackend, shutdown_engine

    root = Path(args.dir) / args.shape
    paths = [root / "base", root / "variant_0", root / "variant_1"]
    if not all((p / "config.json").exists() for p in paths):
        shutil.rmtree(root, ignore_errors=True)
        write_family(root, LlamaShape(**TIED_SHAPES[args.shape], tie_embeddings=True), n_variants=2, seed=0)
    paths = [str(p) for p in paths]
    settings = EvalSettings(backend="vllm", dtype="float32", engine_kwargs=CPU_ENGINE)
    cands = recipes(paths, 2 * args.repeats + args.fresh + 1, seed=3)

    out: dict[str, float] = {}
    out["start"], backend = timed(VLLMBackend, paths, settings)
    (followers,) = backend.llm.collective_rpc(_followers)
    if not followers:
        raise SystemExit("the engine has no tied head to rebuild: not a tied checkpoint?")
    backend.load(cands[0])  # warm-up
    # Modes interleaved swap by swap, so a load spike from a neighbour hits both alike.
    on, off = [], []
    for i in range(args.repeats):
        on.append(swap(backend, cands[1 + 2 * i]))
        backend.llm.collective_rpc(_disable_rebuild)
        off.append(swap(backend, cands[2 + 2 * i]))
        backend.llm.collective_rpc(_enable_rebuild)
    out["swap_rebuild_on"], out["in_worker_on"] = (median([x[k] for x in on]) for k in (0, 1))
    out["swap_rebuild_off"], out["in_worker_off"] = (median([x[k] for x in off]) for k in (0, 1))
    out["min_on"], out["min_off"] = min(x[0] for x in on), min(x[0] for x in off)
    raw = {"on": [round(x[0], 4) for x in on], "off": [round(x[0], 4) for x in off]}
    out["rebuild_alone"] = median([s for _ in range(args.repeats)
                                   for s in backend.llm.collective_rpc(_rebuild_seconds)])
    backend.close()
    gc.collect()

    write, load = [], []
    engine = dict(CPU_ENGINE, dtype="float32", seed=settings.seed)
    for i, recipe in enumerate(cands[-args.fresh:]):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            target = Path(tmp) / f"merged_{i}"
            write.append(timed(merge_to_disk, recipe, target, progress=False)[0])
            seconds, llm = timed(LLM, model=str(target), **engine)
            load.append(seconds)
            shutdown_engine(llm)
            del llm
            gc.collect()
    out["fresh_write"], out["fresh_load"] = median(write), median(load)
    out["fresh"] = out["fresh_write"] + out["fresh_load"]

    print(json.dumps({"shape": args.shape, "repeats": args.repeats, **out, "raw": raw}))
    print(f"tied {args.shape}: median of {args.repeats} swaps, seconds (caller / inside the worker)")
    print(f"  in-place swap, head rebuild on (the fix):    {out['swap_rebuild_on']:.4f} / {out['in_worker_on']:.4f}")
    print(f"  in-place swap, head rebuild off (the bug):   {out['swap_rebuild_off']:.4f} / {out['in_worker_off']:.4f}")
    print(f"  fastest swap, on / off:                      {out['min_on']:.4f} / {out['min_off']:.4f}")
    print(f"  head rebuild alone:                          {out['rebuild_alone']:.4f}")
    print(f"  fresh engine (merge_to_disk + vllm.LLM):     {out['fresh']:.3f} "
          f"(write {out['fresh_write']:.3f} + start {out['fresh_load']:.3f}; median of {args.fresh})")
    print(f"  rebuild overhead per swap: {out['swap_rebuild_on'] - out['swap_rebuild_off']:+.4f} s "
          f"({out['swap_rebuild_on'] / out['swap_rebuild_off']:.2f}x); fresh engine / fixed swap: "
          f"{out['fresh'] / out['swap_rebuild_on']:.0f}x")


if __name__ == "__main__":
    main()
