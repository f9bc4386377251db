"""Data-flow paths on the trained zoo pair: the folding error with the real norm epsilon, and
the in-place switch time of a path next to a parameter-space swap and a fresh load.

- Folding error: each path folded by `workers.data_flow.write_path_model`, loaded back, and
  its logits compared (max abs difference / max abs logit) with the explicit forward pass that
  multiplies each layer's input by its scale (`tests/fixtures/explicit_path.py`). Exact but for
  the RMSNorm epsilon (1e-6 here), which the scales shift.
- Switch: HF, one live model. DFS: `DataFlowSources.apply` of a path into the padded live model
  (depth = max_path_length). PS: `ResidentSources.apply` of a task-arithmetic recipe over the
  zoo's base and two experts into a live model. Baseline: `from_pretrained` of the exported
  path. Median of --repeats.

    .venv/bin/python benchmarks/dfs_fold_and_switch.py [--paths 20] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the explicit forward pass lives with the test fixtures

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--depth", type=int, default=9, help="the live model's padded depth")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from fixtures.explicit_path import explicit_logits, rel_error
    from search_spaces.data_flow import LayerPath, PathStep
    from search_spaces.recipe import Recipe
    from workers.data_flow import DataFlowSources, padded_reference, write_path_model
    from workers.resident import ResidentSources
    from workers.zoo import build_zoo
    from workers.zoo.data_flow_pair import DATA_FLOW_PAIR, DESIGNED_PATH
    from workers.zoo.evaluate import load_model

    zoo = build_zoo()
    pair = {k: str(v) for k, v in DATA_FLOW_PAIR.build(zoo.root).items()}
    reader, adder = pair["reader"], pair["adder"]
    models = {p: load_model(p) for p in (reader, adder)}
    depth = {reader: 5, adder: 4}
    ids = torch.tensor([[1] + list(range(4, 40))])
    tmp = Path(tempfile.mkdtemp(prefix="dfs-fold-"))

    rng = np.random.default_rng(0)
    designed = LayerPath(reader, tuple(PathStep(pair[m], k) for m, k in DESIGNED_PATH))
    paths = [designed, LayerPath(reader, tuple(PathStep(s.model, s.layer, 1.5 if k else 1.0)
                                               for k, s in enumerate(designed.steps)))]
    while len(paths) < args.paths:
        length = int(rng.integers(3, args.depth + 1))
        steps = [PathStep(reader, 0)] + [
            PathStep(m, int(rng.integers(0, depth[m])), float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))
            for m in map(str, rng.choice([reader, adder], size=length - 1))]
        paths.append(LayerPath(reader, tuple(steps)))
    errors = []
    for i, path in enumerate(paths):
        folded = load_model(write_path_model(path, tmp / f"p{i}"))
        with torch.no_grad():
            errors.append(rel_error(folded(ids).logits, explicit_logits(path, models, ids)))

    table = Table(title=f"folding error on the trained pair (real eps 1e-6, float32, {len(paths)} paths)")
    for col in ("paths", "median", "max"):
        table.add_column(col)
    table.add_row("designed, unscaled", f"{errors[0]:.1e}", f"{errors[0]:.1e}")
    table.add_row("designed, scales 1.5", f"{errors[1]:.1e}", f"{errors[1]:.1e}")
    table.add_row(f"random (scales 0.5-2, lengths 3-{args.depth})", f"{statistics.median(errors[2:]):.1e}",
                  f"{max(errors[2:]):.1e}")
    console.print(table)

    def timed(fn) -> float:
        fn()  # warm-up
        out = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return statistics.median(out)

    dfs_sources = DataFlowSources([reader, adder])
    live = load_model(padded_reference(reader, args.depth, tmp / "padded"))
    recipes = [p.to_recipe() for p in paths]
    k = iter(range(10**9))
    dfs = timed(lambda: dfs_sources.apply(recipes[next(k) % len(recipes)], live))

    ps_sources = ResidentSources([str(zoo.base), str(zoo.experts["arith"]), str(zoo.experts["cipher"])])
    ps_live = load_model(zoo.base)
    ps_recipe = Recipe.from_dict({"merge_method": "task_arithmetic", "base_model": str(zoo.base),
                                  "models": [{"model": str(zoo.experts[e]), "parameters": {"weight": 1.0}}
                                             for e in ("arith", "cipher")]})
    ps = timed(lambda: ps_sources.apply(ps_recipe, ps_live))
    exported = write_path_model(designed, tmp / "designed")
    fresh = timed(lambda: load_model(exported))

    table = Table(title=f"candidate switch, HF on CPU (median of {args.repeats}, 1 thread)")
    for col in ("switch", "ms", "vs PS swap"):
        table.add_column(col)
    for name, s in (("DFS path, in place (padded to %d)" % args.depth, dfs), ("PS task arithmetic, in place", ps),
                    ("from_pretrained of the exported path", fresh)):
        table.add_row(name, f"{s * 1e3:.1f}", f"{s / ps:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
