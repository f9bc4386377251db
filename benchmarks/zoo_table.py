"""Reproduce the "merging matters" table of docs/zoo.md through real lm-eval.

    python benchmarks/zoo_table.py [--dir DIR] [--split test|validation] [--limit N] [--json FILE]

Builds the zoo first if it is not cached (see workers.zoo.build_zoo), then scores the base,
every expert and the hand-set task-arithmetic merges on every zoo task with
``lm_eval.simple_evaluate`` (HF backend, in-memory model, offline, log_samples=True),
and prints a markdown table of exact-match accuracy in percent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and its test fixtures

from workers.offline import go_offline  # noqa: E402

go_offline()


def _recipe(weights: dict) -> str:
    return "task_arithmetic " + ", ".join(f"{k}={v}" for k, v in weights.items())


def measure(zoo, split: str = "test", limit: int | None = None, batch_size: int = 64) -> dict:
    from workers.zoo import EXPERTS, HAND_MERGES, MODEL_NAMES
    from workers.zoo.evaluate import (
        lm_eval_scores,
        load_model,
        load_tokenizer,
        merged_model,
        task_manager_for,
    )

    names = zoo.tasks.names(split)
    tm = task_manager_for(zoo.tasks.include_path)
    tok = load_tokenizer(zoo.base)
    rows = {}
    for name in MODEL_NAMES:
        kind = "base" if name == "base" else "expert"
        rows[name] = (kind, load_model(zoo.models[name]))
    for name, weights in HAND_MERGES.items():
        assert set(weights) <= set(EXPERTS)
        rows[name] = (_recipe(weights), merged_model(zoo, weights))
    table = {}
    for name, (what, model) in rows.items():
        t0 = time.time()
        scores = lm_eval_scores(
            model, tok, names, zoo.tasks.include_path,
            batch_size=batch_size, limit=limit, task_manager=tm,
        )
        # report under the test-split names whatever split was scored
        table[name] = {
            "what": what,
            "scores": {n.removesuffix("_val"): s for n, s in scores.items()},
            "seconds": round(time.time() - t0, 1),
        }
    return table


def markdown(table: dict) -> str:
    tasks = list(next(iter(table.values()))["scores"])
    head = "| model | " + " | ".join(tasks) + " | what |"
    sep = "|---|" + "---:|" * len(tasks) + "---|"
    lines = [head, sep]
    for name, row in table.items():
        cells = " | ".join(f"{100 * row['scores'][t]:.1f}" for t in tasks)
        lines.append(f"| {name} | {cells} | {row['what']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from workers.zoo import build_zoo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="zoo directory (default: the build cache)")
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    ap.add_argument("--limit", type=int, default=None, help="samples per task (default: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    args = ap.parse_args(argv)

    torch.set_num_threads(2)
    t0 = time.time()
    zoo = build_zoo(args.dir, progress=True)
    t_build = time.time() - t0
    table = measure(zoo, args.split, args.limit, args.batch_size)
    print(f"\nzoo: {zoo.root} (ready in {t_build:.0f} s); lm-eval exact match, {args.split} split, %\n")
    print(markdown(table))
    print(f"\nscoring took {sum(r['seconds'] for r in table.values()):.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
