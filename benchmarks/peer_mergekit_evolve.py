"""Search efficiency against the real mergekit-evolve 0.1.5, same tasks, same budget, same seeds.

The peer runs from its own virtualenv (``--venv``, created on first use with ``pip install
mergekit[evolve]==0.1.5`` and the same CPU torch wheel as ours). As shipped it cannot run on
a CPU-only machine; ``PATCHES`` lists the smallest edits that let it run, applied to that
venv alone (each is idempotent and printed). Its Ray actors ask for one GPU each, so the
driver starts Ray with fake GPU resources (``ray.init(num_gpus=workers)``), one per worker.

Both tools search task-arithmetic weights of the embedded zoo's three experts over two layer
groups (``examples/zoo_demo.yaml``), with CMA-ES, on the validation splits of the same three
lm-eval tasks with the same weights and document limit. Differences that are the tools' own
and not changed here: mergekit-evolve starts CMA-ES at weight 1/3 with unbounded ``abs()``
weights, ours at 0.5 in [0, 1.5]; mergekit-evolve merges to disk and loads each candidate with
``from_pretrained``, ours swaps weights in place.

Every evaluation of the peer is recorded by a wrapper around its evaluation strategy (the
genotype's merge config and its score); nothing else in it is changed. Test fitness of a
best-so-far candidate is scored afterwards, for the peer's candidates with our scorer on the
test split of the same tasks; ours records it during the run (``report_test``). Run:

    .venv/bin/python benchmarks/peer_mergekit_evolve.py --seeds 0 1 2 3 4 --evaluations 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
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
    limits = {t.limit for t in config.tasks}
    if len(limits) != 1:
        raise SystemExit("mergekit-evolve has one document limit for all tasks; the config has several")
    run_dir = work / f"peer-{seed}"
    storage = run_dir / "storage"
    run_dir.mkdir(parents=True, exist_ok=True)
    genome = {
        "genome": {"models": [str(zoo / "models" / s.removeprefix("zoo:")) for s in config.models.sources],
                   "base_model": str(zoo / "models" / config.models.base.removeprefix("zoo:")),
                   "merge_method": config.space.merge_method,
                   "layer_granularity": zoo_layers(zoo) // config.space.layer_groups},
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
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mergekit-evolve failed (seed {seed}); see {run_dir / 'log.txt'}")
    evals = [json.loads(line) for line in record.read_text().splitlines()]
    return {"seed": seed, "seconds": seconds, "storage": str(storage), "genome": genome,
            "evaluations": [{"fitness": e["score"] if e["score"] is not None else float("-inf"), "config": e["config"]}
                            for e in evals]}


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


def zoo_layers(zoo: Path) -> int:
    return json.loads((zoo / "models" / "base" / "config.json").read_text())["num_hidden_layers"]


def run_ours(store, base, seed: int, budget: int, workers: int, seeds: str | list = "auto", tag: str = "") -> dict:
    """One search of ours, as benchmarks/search_efficiency.py runs it, with test scores kept.

    ``seeds`` replaces ``strategy.seeds``: ``"none"`` drops the initial genomes CMA-ES
    evaluates first by default (`evolve.seeds`: the parents, mergekit-evolve's x0, all
    weights 1); a one-recipe list starts CMA-ES from that recipe."""
    from evolve import runner
    from evolve.preflight import check_run

    config = base.model_validate({
        **base.model_dump(), "name": f"peer-bench-ours{tag}-{seed}",
        "strategy": {**base.strategy.model_dump(), "seed": seed, "seeds": seeds},
        "budget": {"max_evaluations": budget},
        "evaluation": {**base.evaluation.model_dump(), "report_test": True},
        "resources": {**base.resources.model_dump(), "workers": workers},
    })
    start = time.perf_counter()
    outcome = runner.start(store, check_run(config), progress=False)
    seconds = time.perf_counter() - start
    order = {c.id for c in store.list_candidates(outcome.run_id, kind="search")}
    done = sorted((e for e in store.list_evaluations(outcome.run_id) if e.candidate_id in order and e.finished_at),
                  key=lambda e: e.finished_at)
    return {"seed": seed, "seconds": seconds, "run": outcome.run_id, "evaluations": [
        {"fitness": e.fitness if e.fitness is not None else float("-inf"), "test": e.scores.get("test")} for e in done]}


def peer_x0(config, zoo: Path) -> dict:
    """mergekit-evolve's initial genotype as a recipe of ours: every weight 1/N."""
    n = len(config.models.sources)
    return {"merge_method": config.space.merge_method,
            "base_model": str(zoo / "models" / config.models.base.removeprefix("zoo:")),
            "models": [{"model": str(zoo / "models" / m.removeprefix("zoo:")), "parameters": {"weight": 1 / n}}
                       for m in config.models.sources],
            "parameters": dict(config.space.parameters)}


def checkpoints(budget: int) -> list[int]:
    return [max(1, round(budget * f)) for f in (0.25, 0.5, 1.0)]


def best_at(evaluations: list[dict], k: int) -> int:
    """Index of the best validation fitness among the first ``k`` evaluations (earliest on ties)."""
    first = evaluations[:k]
    return max(range(len(first)), key=lambda i: (first[i]["fitness"], -i))


def evals_to_target(evaluations: list[dict], target: float, budget: int) -> int | None:
    best = float("-inf")
    for i, e in enumerate(evaluations[:budget]):
        best = max(best, e["fitness"])
        if best >= target:
            return i + 1
    return None


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "zoo_demo.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluations", type=int, default=30, help="the budget of each search, for both tools")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (fake GPUs for the peer)")
    parser.add_argument("--target", type=float, help="fitness target for evaluations-to-target "
                                                     "(default: the lower of the two tools' mean final best)")
    parser.add_argument("--venv", type=Path, default=CACHE / "peer-venv")
    parser.add_argument("--tools", nargs="+", default=["evolve", "mergekit-evolve"],
                        choices=["evolve", "evolve-noseeds", "evolve-peerstart", "mergekit-evolve"],
                        help="evolve-noseeds: ours with strategy.seeds: none; evolve-peerstart: ours started "
                             "from mergekit-evolve's x0 (every weight 1/N) as its only seed")
    parser.add_argument("--name", default="peer_mergekit_evolve", help="stem of the JSON and PNG files")
    parser.add_argument("--work", type=Path, default=Path("out") / "peer_mergekit_evolve")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results")
    args = parser.parse_args()

    from evolve.config import load_config
    from evolve.store import Store
    from workers.zoo import build_zoo, default_zoo_dir

    base = load_config(args.config)
    build_zoo()  # cached after the first time
    zoo = default_zoo_dir().absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    python = peer_venv(args.venv) if "mergekit-evolve" in args.tools else None
    store = Store(f"sqlite:///{args.work / 'runs.db'}")
    marks = checkpoints(args.evaluations)
    runs: dict[str, list[dict]] = {tool: [] for tool in args.tools}
    for seed in args.seeds:
        for tool in args.tools:
            if tool.startswith("evolve"):
                seeds = {"evolve": "auto", "evolve-noseeds": "none", "evolve-peerstart": [peer_x0(base, zoo)]}[tool]
                run = run_ours(store, base, seed, args.evaluations, args.workers, seeds=seeds, tag=tool[6:])
            else:
                run = run_peer(python, base, zoo, seed, args.evaluations, args.workers, args.work)
                picks = sorted({best_at(run["evaluations"], k) for k in marks})
                tests = peer_test_scores(python, run, [run["evaluations"][i]["config"] for i in picks], base, zoo)
                for i, score in zip(picks, tests):
                    run["evaluations"][i]["test"] = score
            runs[tool].append(run)
            final = max(e["fitness"] for e in run["evaluations"][:args.evaluations])
            console.print(f"{tool} seed {seed}: {len(run['evaluations'])} evaluations in {run['seconds']:.0f} s, "
                          f"best validation {final:.3f}")
            (args.out / f"{args.name}.json").write_text(json.dumps(report(args, runs, marks), indent=2))

    result = report(args, runs, marks)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    table = Table(title=f"best fitness (mean ± std over {len(args.seeds)} seeds), budget {args.evaluations} evaluations, "
                        f"{args.workers} workers")
    for col in ("tool", *[f"val @{k}" for k in marks], *[f"test @{k}" for k in marks], "evals to target",
                "wall s / run"):
        table.add_column(col)
    for tool, row in result["tools"].items():
        reached = [n for n in row["evals_to_target"] if n is not None]
        table.add_row(tool, *[mean_std(row["validation"][str(k)]) for k in marks],
                      *[mean_std(row["test"][str(k)]) for k in marks],
                      f"{statistics.mean(reached):.1f} ({len(reached)}/{len(row['evals_to_target'])})" if reached
                      else f"- (0/{len(row['evals_to_target'])})",
                      f"{statistics.mean(row['seconds']):.0f}")
    console.print(table)
    console.print(f"target fitness: {result['target']:.3f}")
    plot(result, args.out / f"{args.name}.png")
    console.print(f"results: {args.out / f'{args.name}.json'}, {args.out / f'{args.name}.png'}")


def report(args, runs: dict[str, list[dict]], marks: list[int]) -> dict:
    finals = {tool: [max(e["fitness"] for e in r["evaluations"][:args.evaluations]) for r in rs]
              for tool, rs in runs.items() if rs}
    target = args.target if args.target is not None else min(statistics.mean(f) for f in finals.values())
    tools = {}
    for tool, rs in runs.items():
        tools[tool] = {
            "validation": {str(k): [r["evaluations"][best_at(r["evaluations"], k)]["fitness"] for r in rs] for k in marks},
            "test": {str(k): [r["evaluations"][best_at(r["evaluations"], k)].get("test") for r in rs] for k in marks},
            "evals_to_target": [evals_to_target(r["evaluations"], target, args.evaluations) for r in rs],
            "seconds": [r["seconds"] for r in rs],
            "curves": [[max(e["fitness"] for e in r["evaluations"][:i + 1]) for i in range(min(args.evaluations,
                                                                                             len(r["evaluations"])))]
                       for r in rs],
        }
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget": args.evaluations,
            "seeds": args.seeds, "workers": args.workers, "target": target, "patches": [p[3] for p in PATCHES],
            "tools": tools, "runs": {tool: [{**r, "evaluations": [{k: v for k, v in e.items() if k != "config"}
                                                                for e in r["evaluations"]]} for r in rs]
                                     for tool, rs in runs.items()}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (tool, row), color in zip(result["tools"].items(), ("tab:blue", "tab:gray", "tab:orange")):
        for i, c in enumerate(row["curves"]):
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.7, label=tool if i == 0 else None)
    ax.axhline(result["target"], color="tab:red", ls="--", lw=1, label="target")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best-so-far validation fitness")
    ax.set_xlim(1, result["budget"])
    ax.set_title(f"zoo search, {len(result['seeds'])} seeds: " + " vs ".join(result["tools"]))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
