"""M2N2 presets and CMA-ES on model-free objectives: same budget, same seeds, in process.

Two objectives over a task-arithmetic space (3 source models, ``--groups`` layer groups):

- ``analytic``: `workers.analytic_scorer.AnalyticScorer` (every weight at 0.7; 20 samples);
- ``experts``: task t (20 samples) wants model t at weight 1 and the others at 0 in "its"
  layer groups (a contiguous block: the first third of the groups is task 0's, and so on), so
  each source model solves one task and the best merge takes each block of layers from a
  different expert: what M2N2's split crossover is for (``--interleaved``: group g is task
  g mod 3's, which no single split can separate).
  Sample j of a task is solved when the task's mean squared error is below (j + 1) / 80.

Candidates are asked and told asynchronously (``--in-flight`` at once, the oldest told first),
with the seeds `evolve.seeds` gives for ``strategy.seeds: auto``. ``m2n2-before`` approximates the
previous M2N2: no seeds, a random-filled archive, splits anywhere (no layout); its tie rule
(drop the newest) is not reproduced.

    .venv/bin/python benchmarks/m2n2_ablations.py --evaluations 200 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evolve.seeds import seed_genomes
from evolve.strategies import Result, make_strategy
from search_spaces.parameter_space import ParameterSpace

N_SAMPLES = 20


@dataclass(frozen=True)
class Variant:
    strategy: str
    settings: dict
    seeded: bool = True
    layout: bool = True


VARIANTS: dict[str, Variant] = {
    "m2n2": Variant("m2n2", {}),
    "m2n2-ga": Variant("m2n2", {"preset": "ga"}),
    "m2n2-no_split": Variant("m2n2", {"preset": "no_split"}),
    "m2n2-no_attraction": Variant("m2n2", {"preset": "no_attraction"}),
    "m2n2-before": Variant("m2n2", {"random_fill": True}, seeded=False, layout=False),
    "cma": Variant("cma", {}),
    "cma-unseeded": Variant("cma", {}, seeded=False),
    "random": Variant("random", {}, seeded=False),
}


def make_space(groups: int) -> ParameterSpace:
    return ParameterSpace.from_dict({"merge_method": "task_arithmetic", "base_model": "zoo/base",
                                     "models": ["zoo/a", "zoo/b", "zoo/c"], "layer_groups": groups,
                                     "search": {"weight": [0.0, 1.0]}})


def experts_objective(space: ParameterSpace, interleaved: bool = False) -> Callable[[np.ndarray], Result]:
    weights = space.values  # group-major: (group, model)
    n_models = len(space.models)
    target = np.zeros((space.layer_groups, n_models))
    groups = np.arange(space.layer_groups)
    owner = groups % n_models if interleaved else groups * n_models // space.layer_groups
    target[np.arange(space.layer_groups), owner] = 1.0

    def score(x: np.ndarray) -> Result:
        w = weights(x).reshape(space.layer_groups, n_models)
        samples, fitness = {}, 0.0
        for t in range(n_models):
            error = float(np.mean((w[owner == t] - target[owner == t]) ** 2))
            hits = [1.0 if error < (j + 1) / (4 * N_SAMPLES) else 0.0 for j in range(N_SAMPLES)]
            samples[f"task{t}"] = hits
            fitness += float(np.mean(hits)) / n_models
        return Result.success(fitness, samples=samples)

    return score


def analytic_objective(space: ParameterSpace) -> Callable[[np.ndarray], Result]:
    from workers.analytic_scorer import AnalyticScorer

    scorer = AnalyticScorer()

    def score(x: np.ndarray) -> Result:
        out = scorer.evaluate(space.decode(x))
        return Result.success(out.fitness, samples=out.validation_samples)

    return score


def run(variant: Variant, space: ParameterSpace, score, seed: int, evaluations: int, in_flight: int) -> float:
    seeds = seed_genomes(space, "auto") if variant.seeded else ()
    s = make_strategy(variant.strategy, space.dimension, seed, num_workers=in_flight, seeds=seeds,
                      space=space if variant.layout else None, **variant.settings)
    pending: list = []
    told = 0
    while told < evaluations:
        pending += s.ask(max(0, min(in_flight - len(pending), evaluations - told - len(pending))))
        c = pending.pop(0)
        s.tell(c.id, score(c.array))
        told += 1
    return s.best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["experts", "analytic"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluations", type=int, default=200)
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--interleaved", action="store_true", help="experts: group g belongs to task g mod 3")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    space = make_space(args.groups)
    results: dict[str, dict[str, list[float]]] = {}
    for objective in args.objectives:
        score = experts_objective(space, args.interleaved) if objective == "experts" else analytic_objective(space)
        print(f"\n{objective}: best fitness after {args.evaluations} evaluations "
              f"(d = {space.dimension}, {args.in_flight} in flight), mean ± std over seeds {args.seeds}")
        for name in args.variants:
            finals = [run(VARIANTS[name], space, score, seed, args.evaluations, args.in_flight) for seed in args.seeds]
            results.setdefault(objective, {})[name] = finals
            print(f"  {name:20s} {statistics.mean(finals):.4f} ± {statistics.pstdev(finals):.4f}   "
                  + " ".join(f"{f:.3f}" for f in finals))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
