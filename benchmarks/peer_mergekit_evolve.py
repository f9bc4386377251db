"""Search efficiency against the real mergekit-evolve 0.1.5, same tasks, same budget, same seeds.

The peer runs from its own virtualenv (``--venv``, created on first use with ``pip install
mergekit[evolve]==0.1.5`` and the same CPU torch wheel as ours). As shipped it cannot run on
a CPU-only machine; ``PATCHES`` lists the smallest edits that let it run, applied to that
venv alone (each is idempotent and printed). Its Ray actors ask for one GPU each, so the
driver starts Ray with fake GPU resources (``ray.init(num_gpus=workers)``), one per worker.

Both tools search the space of one of our configs (``--config``: ``examples/zoo_demo.yaml``,
``examples/zoo_kind.yaml``, ``benchmarks/configs/zoo_dare_ties_72.yaml``), translated into a
mergekit-evolve genome: the same merge method, models, layer groups (its
``layer_granularity``), tensor kinds (its ``filters``; the last parameter set is the rest) and
``normalize``, on the validation splits of the same lm-eval tasks with the same weights and
document limit. Differences that are the tools' own and not changed here: mergekit-evolve
starts CMA-ES at weight 1/N, density 1, with unbounded ``abs()`` weights, ours from its seeds
within the config's bounds; mergekit-evolve merges to disk in bfloat16 and loads each
candidate with ``from_pretrained``, ours swaps float32 weights in place.

Ours runs in the variants ``--tools`` names: ``evolve[:STRATEGY][:noseeds|:peerstart][:fidelity]``,
and ``:KEY=VALUE`` for a strategy setting (e.g. ``evolve:cma:sigma0=0.0833``).
The budget counts candidates for every tool (a multi-fidelity run's low-only candidates
count); the cost to reach the target is also given in validation documents scored.

Every evaluation of the peer is recorded by a wrapper around its evaluation strategy (the
genotype's merge config and its score); nothing else in it is changed. Test fitness of a
best-so-far candidate is scored afterwards with the peer's own merge and evaluation; ours
records it during the run (``report_test``). Run:

    .venv/bin/python benchmarks/peer_mergekit_evolve.py --config examples/zoo_kind.yaml --seeds 0 1 2 3 4 \
        --evaluations 54 --tools mergekit-evolve evolve evolve:cma:fidelity evolve:m2n2 evolve:random
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

console = Console(width=150)
CACHE = Path.home() / ".cache" / "evolve-merge"
SITE = "lib/python{v}/site-packages"

# (file under site-packages, old text, new text, why). The smallest edits that let
# mergekit-evolve 0.1.5 run on a CPU-only machine with current lm-eval; nothing else.
PATCHES = [
    ("mergekit/evo/actors.py", "import gc\n", "from __future__ import annotations  # evolve-merge bench patch\n\nimport gc\n",
     "a class annotation names lm_eval.models.vllm_causallms.VLLM, which imports vLLM unconditionally"),
    ("mergekit/evo/monkeypatch.py",
     "    # HACK: fix crash on some tasks due to unset AUTO_MODEL_CLASS for vLLM\n    import lm_eval.models.vllm_causallms\n",
     "    # HACK: fix crash on some tasks due to unset AUTO_MODEL_CLASS for vLLM\n"
     "    try:  # evolve-merge bench patch\n        import lm_eval.models.vllm_causallms\n"
     "    except ImportError:\n        return\n",
     "monkeypatch_lmeval_vllm() imports lm_eval's vLLM backend, i.e. vLLM, even with --no-vllm"),
    ("mergekit/evo/actors.py", "        torch_accelerator_module.empty_cache()\n",
     "        if hasattr(torch_accelerator_module, \"empty_cache\"):  # evolve-merge bench patch\n"
     "            torch_accelerator_module.empty_cache()\n",
     "torch.cpu has no empty_cache()"),
    ("mergekit/evo/helpers.py", '            model_args["use_cache"] = True\n',
     '            model_args["use_cache"] = True\n'
     '            if not torch.cuda.is_available():  # evolve-merge bench patch\n'
     '                model_args["device"] = "cpu"\n',
     "HF evaluation leaves lm-eval's device default, cuda"),
]


def peer_venv(venv: Path) -> Path:
    """The peer's python, after creating its venv if absent and applying ``PATCHES``."""
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        console.print(f"creating {venv} (mergekit[evolve]==0.1.5) ...")
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "mergekit[evolve]==0.1.5"], check=True)
        (venv / ".installed").write_text("ok")
    version = subprocess.run([str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    site = venv / SITE.format(v=version)
    for rel, old, new, why in PATCHES:
        path = site / rel
        text = path.read_text()
        if new in text:
            continue
        if old not in text:
            raise SystemExit(f"{path}: cannot apply the patch ({why}): the expected text is not there")
        path.write_text(text.replace(old, new, 1))
        console.print(f"patched {rel}: {why}")
    return python


# Run by the peer's python: mergekit-evolve's own CLI, with Ray started on fake GPUs and every
# evaluation appended to a JSONL file (its merge config and score), in the order it returns.
WRAPPER = r"""
import json, sys, time
import ray
record, workers = sys.argv[1], int(sys.argv[2])
ray.init(num_cpus=workers, num_gpus=workers, include_dashboard=False)
from mergekit.evo import strategy
evaluate = strategy.ActorPoolEvaluationStrategy.evaluate_genotypes
def recorded(self, genotypes):
    results = evaluate(self, genotypes)
    with open(record, "a") as f:
        for x, r in zip(genotypes, results):
            f.write(json.dumps({"t": time.time(), "score": r["score"],
                                "config": self.genome.genotype_merge_config(x).to_yaml()}) + "\n")
    return results
strategy.ActorPoolEvaluationStrategy.evaluate_genotypes = recorded
from mergekit.scripts.evolve import main
sys.argv = ["mergekit-evolve", *sys.argv[3:]]
main()
"""

# Run by the peer's python: the peer's own merge and evaluation (mergekit.evo.helpers) of
# given merge configs on given tasks; prints one score per config.
TEST_SCORER = r"""
import json, os, sys, tempfile
import lm_eval.tasks, yaml
from mergekit.config import MergeConfiguration
from mergekit.evo.config import TaskConfiguration
from mergekit.evo.helpers import evaluate_model
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
job = json.load(open(sys.argv[1]))
tasks = [TaskConfiguration(**t) for t in job["tasks"]]
manager = lm_eval.tasks.TaskManager(include_path=job["include_path"])
scores = []
for text in job["configs"]:
    out = tempfile.mkdtemp(prefix="merged", dir=job["storage"])
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), out,
              options=MergeOptions(cuda=False, quiet=True, copy_tokenizer=True, random_seed=job["seed"]))
    scores.append(evaluate_model(out, tasks, num_fewshot=None, limit=job["limit"], vllm=False,
                                 batch_size=job["batch_size"], task_manager=manager,
                                 apply_chat_template=False, fewshot_as_multiturn=False)["score"])
print(json.dumps(scores))
"""


def peer_tasks(config, split: str) -> list[dict]:
    """Our task list as mergekit-evolve TaskConfigurations: the zoo's ``NAME_val`` task files
    hold the validation split, ``NAME`` the test split."""
    return [{"name": t.name + ("_val" if split == "validation" else ""), "metric": f"{t.metric},none",
             "weight": t.weight} for t in config.tasks]


def run_peer(python: Path, config, zoo: Path, seed: int, budget: int, workers: int, work: Path) -> dict:
    """One mergekit-evolve search; returns its evaluations (score, config) in order and wall time."""
    from workers.zoo.catalog import model_depth

    limits = {t.limit for t in config.tasks}
    if len(limits) != 1:
        raise SystemExit("mergekit-evolve has one document limit for all tasks; the config has several")
    run_dir = (work / f"peer-{config.name}-{seed}").absolute()
    storage = run_dir / "storage"
    run_dir.mkdir(parents=True, exist_ok=True)
    genome = {
        "genome": {"models": [zoo_path(s, zoo) for s in config.models.sources],
                   "base_model": zoo_path(config.models.base, zoo),
                   "merge_method": config.space.merge_method,
                   "layer_granularity": model_depth(config.models.base.removeprefix("zoo:")) // config.space.layer_groups,
                   # our kinds are its filters: a parameter set per filter, the last for the rest
                   "filters": list(config.space.kinds) or None,
                   "normalize": config.space.parameters.get("normalize")},
        "tasks": peer_tasks(config, "validation"), "limit": limits.pop(),
        "apply_chat_template": False, "fewshot_as_multiturn": False,
    }
    (run_dir / "genome.yaml").write_text(yaml.safe_dump(genome))
    record = run_dir / "evaluations.jsonl"
    record.unlink(missing_ok=True)
    cmd = [str(python), "-c", WRAPPER, str(record), str(workers), str(run_dir / "genome.yaml"),
           "--storage-path", str(storage), "--max-fevals", str(budget), "--num-gpus", str(workers),
           "--no-merge-cuda", "--task-search-path", str(zoo / "tasks"), "--batch-size", str(config.evaluation.batch_size),
           "--random-seed", str(seed), "--no-save-final-model"]
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir,  # pycma writes outcmaes/ there
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mergekit-evolve failed (seed {seed}); see {run_dir / 'log.txt'}")
    evals = [json.loads(line) for line in record.read_text().splitlines()]
    return {"seed": seed, "seconds": seconds, "storage": str(storage), "genome": genome,
            "evaluations": [{"fitness": e["score"] if e["score"] is not None else float("-inf"), "config": e["config"],
                             "new": True, "samples": validation_cost(config, "full", 0)} for e in evals]}


def peer_test_scores(python: Path, run: dict, configs: list[str], config, zoo: Path) -> list[float]:
    job = Path(run["storage"]).parent / "test-job.json"
    job.write_text(json.dumps({"configs": configs, "tasks": peer_tasks(config, "test"), "limit": run["genome"]["limit"],
                               "include_path": str(zoo / "tasks"), "storage": run["storage"], "seed": run["seed"],
                               "batch_size": config.evaluation.batch_size}))
    proc = subprocess.run([str(python), "-c", TEST_SCORER, str(job)], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0:
        raise SystemExit(f"test scoring of mergekit-evolve's candidates failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def zoo_path(ref: str, zoo: Path) -> str:
    """The directory of a ``zoo:NAME`` model, for the peer, which takes paths."""
    from workers.zoo.catalog import model_dir

    return str(model_dir(ref.removeprefix("zoo:"), zoo))


@dataclass(frozen=True)
class Variant:
    """One of our configurations in the suite, named
    ``evolve[:STRATEGY][:noseeds|:peerstart][:fidelity][:KEY=VALUE...]``."""

    name: str
    strategy: str = "cma"
    seeds: str = "auto"  # auto | none | peerstart (mergekit-evolve's x0 as the only seed)
    fidelity: bool = False
    settings: tuple[tuple[str, float], ...] = ()  # strategy settings, over the config's

    @classmethod
    def parse(cls, name: str) -> Variant:
        head, *flags = name.split(":")
        if head != "evolve":
            raise SystemExit(f"--tools: {name!r}: ours are named evolve[:STRATEGY][:noseeds|:peerstart][:fidelity]")
        variant = cls(name)
        for flag in flags:
            if flag in ("noseeds", "peerstart"):
                variant = replace(variant, seeds="none" if flag == "noseeds" else flag)
            elif flag == "fidelity":
                variant = replace(variant, fidelity=True)
            elif "=" in flag:
                key, value = flag.split("=", 1)
                number = int(value) if value.lstrip("-").isdigit() else float(value)  # popsize=6 stays an int
                variant = replace(variant, settings=(*variant.settings, (key, number)))
            else:
                variant = replace(variant, strategy=flag)
        return variant


def validation_cost(config, fidelity: str, low_limit: int) -> int:
    """Validation documents one evaluation scores: every task's limit, or ``low_limit`` of each."""
    return sum(t.limit if fidelity == "full" else min(low_limit, t.limit) for t in config.tasks)


def run_ours(store, base, variant: Variant, seed: int, budget: int, workers: int, zoo: Path,
             low_limit: int, promote_fraction: float) -> dict:
    """One search of ours with test scores kept; its evaluations in the order they finished.

    Each entry: ``fitness`` (a full result's validation fitness; -inf for a low-fidelity one,
    which is never ranked), ``test``, ``samples`` (validation documents scored) and ``new`` (the
    candidate's first result: the budget counts candidates)."""
    from evolve import runner
    from evolve.preflight import check_run
    from workers.outcome import Fidelity

    seeds = [peer_x0(base, zoo)] if variant.seeds == "peerstart" else variant.seeds
    settings = base.strategy.settings if variant.strategy == base.strategy.name else {}
    settings = {**settings, **dict(variant.settings)}
    config = base.model_validate({
        **base.model_dump(), "name": f"peer-bench-{variant.name.replace(':', '-')}-{seed}",
        "strategy": {"name": variant.strategy, "seed": seed, "seeds": seeds, "settings": settings},
        "budget": {"max_evaluations": budget},
        "evaluation": {**base.evaluation.model_dump(), "report_test": True},
        "resources": {**base.resources.model_dump(), "workers": workers},
        "fidelity": {"low_limit": low_limit, "promote_fraction": promote_fraction} if variant.fidelity else None,
    })
    start = time.perf_counter()
    outcome = runner.start(store, check_run(config), progress=False)
    seconds = time.perf_counter() - start
    search = {c.id for c in store.list_candidates(outcome.run_id, kind="search")}
    done = sorted((e for e in store.list_evaluations(outcome.run_id, fidelity=None)
                   if e.candidate_id in search and e.finished_at), key=lambda e: e.finished_at)
    seen: set[str] = set()
    evaluations = []
    for e in done:
        full = e.fidelity == Fidelity.FULL
        evaluations.append({"fitness": e.fitness if full and e.fitness is not None else float("-inf"),
                            "test": e.scores.get("test") if full else None, "new": e.candidate_id not in seen,
                            "samples": validation_cost(config, "full" if full else "low", low_limit)})
        seen.add(e.candidate_id)
    return {"seed": seed, "seconds": seconds, "run": outcome.run_id, "evaluations": evaluations}


def peer_x0(config, zoo: Path) -> dict:
    """mergekit-evolve's initial genotype as a recipe of ours: every weight 1/N, density 1."""
    n = len(config.models.sources)
    density = {"density": 1.0} if "density" in config.space.search else {}
    return {"merge_method": config.space.merge_method,
            "base_model": zoo_path(config.models.base, zoo),
            "models": [{"model": zoo_path(m, zoo), "parameters": {"weight": 1 / n, **density}}
                       for m in config.models.sources],
            "parameters": dict(config.space.parameters)}


def checkpoints(budget: int) -> list[int]:
    return [max(1, round(budget * f)) for f in (0.25, 0.5, 1.0)]


def upto(evaluations: list[dict], k: int) -> list[dict]:
    """The evaluations that finished while at most ``k`` candidates had a result (the budget
    counts candidates: a promoted candidate's full result is not a new one)."""
    count = 0
    for i, e in enumerate(evaluations):
        count += e["new"]
        if count > k:
            return evaluations[:i]
    return evaluations


def best_at(evaluations: list[dict], k: int) -> int:
    """Index of the best validation fitness within the first ``k`` candidates (earliest on ties)."""
    first = upto(evaluations, k)
    return max(range(len(first)), key=lambda i: (first[i]["fitness"], -i))


def cost_to_target(evaluations: list[dict], target: float, budget: int) -> tuple[int, int] | None:
    """(candidates, validation documents) spent when the best first reached ``target``; None if never."""
    candidates = samples = 0
    for e in upto(evaluations, budget):
        candidates += e["new"]
        samples += e["samples"]
        if e["fitness"] >= target:
            return candidates, samples
    return None


def curve(evaluations: list[dict], budget: int) -> list[float]:
    """Best-so-far validation fitness after each candidate, 1..budget."""
    out, best = [], float("-inf")
    for e in upto(evaluations, budget):
        best = max(best, e["fitness"])
        if e["new"]:
            out.append(best)
        else:
            out[-1] = best
    return out


def mean_std(values: list[float]) -> str:
    """Mean ± std of the finite values; how many there were when some are missing (-inf: no
    full result yet, in a multi-fidelity run)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-"
    text = f"{statistics.mean(finite):.3f} ± {statistics.pstdev(finite):.3f}"
    return text if len(finite) == len(values) else f"{text} ({len(finite)}/{len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "zoo_demo.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluations", type=int, default=30, help="the budget of each search in candidates, for every tool")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (fake GPUs for the peer)")
    parser.add_argument("--target", type=float, help="fitness target for cost-to-target (default: mergekit-evolve's "
                                                     "mean final best, else the lowest tool's)")
    parser.add_argument("--venv", type=Path, default=CACHE / "peer-venv")
    parser.add_argument("--tools", nargs="+", default=["evolve", "mergekit-evolve"],
                        help="mergekit-evolve, or ours as evolve[:STRATEGY][:noseeds|:peerstart][:fidelity][:KEY=VALUE]: "
                             "cma by default; noseeds = strategy.seeds: none; peerstart = mergekit-evolve's x0 "
                             "(every weight 1/N, density 1) as the only seed; fidelity = multi-fidelity")
    parser.add_argument("--low-limit", type=int, default=8, help="documents per task at low fidelity")
    parser.add_argument("--promote-fraction", type=float, default=0.05, help="ASHA: the top fraction promoted")
    parser.add_argument("--name", default="peer_mergekit_evolve", help="stem of the JSON and PNG files")
    parser.add_argument("--work", type=Path, default=Path("out") / "peer_mergekit_evolve")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results")
    parser.add_argument("--replot", type=Path, help="only draw the PNG again from this JSON of an earlier run")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.replot.read_text())
        plot(result, args.replot.with_suffix(".png"))
        args.replot.with_suffix(".md").write_text(markdown(result))
        return
    variants = {tool: Variant.parse(tool) for tool in args.tools if tool != "mergekit-evolve"}

    from evolve.config import load_config
    from evolve.store import Store
    from workers.zoo import default_zoo_dir
    from workers.zoo.catalog import build_models

    base = load_config(args.config)
    build_models([base.models.base, *base.models.sources])  # cached after the first time
    zoo = default_zoo_dir().absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    python = peer_venv(args.venv) if "mergekit-evolve" in args.tools else None
    store = Store(f"sqlite:///{args.work / 'runs.db'}")
    marks = checkpoints(args.evaluations)
    runs: dict[str, list[dict]] = {tool: [] for tool in args.tools}
    for seed in args.seeds:
        for tool in args.tools:
            if tool in variants:
                run = run_ours(store, base, variants[tool], seed, args.evaluations, args.workers, zoo,
                               args.low_limit, args.promote_fraction)
            else:
                run = run_peer(python, base, zoo, seed, args.evaluations, args.workers, args.work)
                picks = sorted({best_at(run["evaluations"], k) for k in marks})
                tests = peer_test_scores(python, run, [run["evaluations"][i]["config"] for i in picks], base, zoo)
                for i, score in zip(picks, tests):
                    run["evaluations"][i]["test"] = score
            runs[tool].append(run)
            console.print(f"{tool} seed {seed}: {len(run['evaluations'])} evaluations in {run['seconds']:.0f} s, "
                          f"best validation {curve(run['evaluations'], args.evaluations)[-1]:.3f}")
            (args.out / f"{args.name}.json").write_text(json.dumps(report(args, base, runs, marks), indent=2))

    result = report(args, base, runs, marks)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    table = Table(title=f"{args.config.name}: best fitness (mean ± std over {len(args.seeds)} seeds), budget "
                        f"{args.evaluations} candidates, {args.workers} workers")
    for col in ("tool", *[f"val @{k}" for k in marks], *[f"test @{k}" for k in marks], "candidates to target",
                "documents to target", "wall s / run"):
        table.add_column(col)
    for tool, row in result["tools"].items():
        reached = [c for c in row["to_target"] if c is not None]
        count = f"({len(reached)}/{len(row['to_target'])})"
        table.add_row(tool, *[mean_std(row["validation"][str(k)]) for k in marks],
                      *[mean_std(row["test"][str(k)]) for k in marks],
                      f"{statistics.mean(c for c, _ in reached):.1f} {count}" if reached else f"- {count}",
                      f"{statistics.mean(d for _, d in reached):.0f}" if reached else "-",
                      f"{statistics.mean(row['seconds']):.0f}")
    console.print(table)
    console.print(f"target fitness: {result['target']:.3f}")
    plot(result, args.out / f"{args.name}.png")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    console.print(f"results: {args.out / args.name}.json, .png and .md")


def report(args, base, runs: dict[str, list[dict]], marks: list[int]) -> dict:
    finals = {tool: [curve(r["evaluations"], args.evaluations)[-1] for r in rs] for tool, rs in runs.items() if rs}
    if args.target is not None:
        target = args.target
    elif finals.get("mergekit-evolve"):
        target = statistics.mean(finals["mergekit-evolve"])
    else:
        target = min(statistics.mean(f) for f in finals.values())
    tools = {}
    for tool, rs in runs.items():
        picks = {str(k): [r["evaluations"][best_at(r["evaluations"], k)] for r in rs] for k in marks}
        tools[tool] = {
            "validation": {k: [e["fitness"] for e in es] for k, es in picks.items()},
            "test": {k: [e.get("test") for e in es] for k, es in picks.items()},
            "to_target": [cost_to_target(r["evaluations"], target, args.evaluations) for r in rs],
            "seconds": [r["seconds"] for r in rs],
            "curves": [curve(r["evaluations"], args.evaluations) for r in rs],
        }
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "config": str(args.config),
            "budget": args.evaluations, "seeds": args.seeds, "workers": args.workers, "target": target,
            "documents_per_full_evaluation": validation_cost(base, "full", 0),
            "fidelity": {"low_limit": args.low_limit, "promote_fraction": args.promote_fraction},
            "patches": [p[3] for p in PATCHES], "tools": tools,
            "runs": {tool: [{**r, "evaluations": [{k: v for k, v in e.items() if k != "config"}
                                                  for e in r["evaluations"]]} for r in rs]
                     for tool, rs in runs.items()}}


def markdown(result: dict) -> str:
    """The result as a markdown table, for benchmarks/README.md."""
    marks = [int(k) for k in next(iter(result["tools"].values()))["validation"]]
    head = ["tool", *[f"val @{k}" for k in marks], *[f"test @{k}" for k in marks],
            f"candidates to {result['target']:.3f} (reached)", "documents to target", "wall s / run"]
    lines = [f"{Path(result['config']).name}, {result['date']}: mean ± std over {len(result['seeds'])} seeds, "
             f"budget {result['budget']} candidates, {result['workers']} workers", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool, row in result["tools"].items():
        reached = [c for c in row["to_target"] if c is not None]
        count = f"({len(reached)}/{len(row['to_target'])})"
        lines.append("| " + " | ".join([
            tool, *[mean_std(row["validation"][str(k)]) for k in marks], *[mean_std(row["test"][str(k)]) for k in marks],
            f"{statistics.mean(c for c, _ in reached):.1f} {count}" if reached else f"- {count}",
            f"{statistics.mean(d for _, d in reached):.0f}" if reached else "-",
            f"{statistics.mean(row['seconds']):.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10").colors
    for (tool, row), color in zip(result["tools"].items(), colors):
        color = "black" if tool == "mergekit-evolve" else color
        curves = np.array([c + c[-1:] * (result["budget"] - len(c)) for c in row["curves"]])  # pad a short run flat
        curves[~np.isfinite(curves)] = np.nan  # no full result yet (multi-fidelity): not drawn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column with no full result at all
            x, mean, std = np.arange(1, curves.shape[1] + 1), np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        ax.plot(x, mean, color=color, lw=2, label=f"{tool} (mean of {len(curves)})")
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.12)
    ax.axhline(result["target"], color="tab:red", ls="--", lw=1, label="target")
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("best-so-far validation fitness (band: ± std over seeds)")
    ax.set_xlim(1, result["budget"])
    ax.set_title(f"{Path(result['config']).stem}, {len(result['seeds'])} seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
