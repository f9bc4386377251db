"""The `evolve` command line.

User mistakes (`UserError`) print one line naming the culprit and exit with code 2, with no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from search_spaces.errors import UserError

if TYPE_CHECKING:
    from evolve.config import RunConfig
    from evolve.loop import LoopStats

console = Console(stderr=True)


def _cmd_merge(args: argparse.Namespace) -> int:
    from search_spaces.recipe import Recipe
    from workers.export import merge_to_disk

    recipe = Recipe.from_file(args.recipe)
    out = merge_to_disk(recipe, args.out, max_shard_bytes=int(args.shard_size * 2**20),
                        progress=not args.quiet, overwrite=args.force)
    console.print(f"merged {len(recipe.model_paths)} model(s) with {recipe.merge_method} into {out}")
    return 0


def _store(args: argparse.Namespace, config=None):
    from evolve.config import resolve_store_url
    from evolve.store import Store

    return Store(resolve_store_url(getattr(args, "store", None), config))


def _cmd_run(args: argparse.Namespace) -> int:
    from evolve.config import load_config
    from evolve.preflight import check_run

    config = load_config(args.config)  # before the heavy imports: a bad config fails at once
    if args.address:
        config = config.model_copy(update={"resources": config.resources.model_copy(update={"address": args.address})})
    checked = check_run(config, source=args.config)  # everything knowable before Ray starts
    store = _store(args, config)

    from evolve import runner
    from evolve.report import print_leaderboard

    outcome = runner.start(store, checked, progress=not args.quiet)
    console.print(f"run [bold]{outcome.run_id}[/]: {outcome.stats.evaluations} evaluations, "
                  f"{outcome.stats.failures} failed, busy fraction {outcome.stats.busy_fraction:.0%}")
    _say_if_low_rung_dropped(outcome.stats)
    print_leaderboard(store, outcome.run_id, split=_final_split(config), limit=10)
    return 0


def _final_split(config: RunConfig) -> str:
    """The split of the leaderboard printed when a run ends: test, unless the run never scores it."""
    return "test" if config.evaluation.report_test else "validation"


def _say_if_low_rung_dropped(stats: LoopStats) -> None:
    """One line when a multi-fidelity run dropped its low rung (`evolve.loop.low_rung_flat`)."""
    if stats.low_rung_dropped is not None:
        from evolve.fidelity import FLAT_LOW_RESULTS

        console.print(f"[yellow]fidelity:[/] the first {FLAT_LOW_RESULTS} low results all scored "
                      f"{stats.low_rung_dropped:g}, so the low rung could not rank candidates; "
                      "later ones were scored in full (raise fidelity.low_limit, or drop fidelity:)")


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from evolve.pipeline import main as pipeline_main

    return pipeline_main([str(args.config), *(["--store", args.store] if args.store else []),
                          *(["--quiet"] if args.quiet else [])])


def _cmd_resume(args: argparse.Namespace) -> int:
    from evolve import runner
    from evolve.report import print_leaderboard

    store = _store(args)
    outcome = runner.resume(store, args.run, force=args.force, progress=not args.quiet)
    console.print(f"run [bold]{outcome.run_id}[/] resumed: {outcome.stats.evaluations} evaluations in total")
    _say_if_low_rung_dropped(outcome.stats)
    from evolve.config import RunConfig

    config = RunConfig.model_validate(store.get_run(outcome.run_id).config)
    print_leaderboard(store, outcome.run_id, split=_final_split(config), limit=10)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from evolve.report import print_runs

    print_runs(_store(args), fmt=args.format)
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from evolve.report import print_leaderboard

    if args.top is not None and args.top < 1:
        raise UserError(f"--top: must be at least 1, got {args.top}")
    objectives = None if args.objectives is None else [t.strip() for t in args.objectives.split(",") if t.strip()]
    print_leaderboard(_store(args), args.run, split=args.split, limit=args.top, fmt=args.format, task=args.task,
                      pareto=args.pareto, objectives=objectives or None)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from evolve.report import print_status

    if args.watch is not None and args.watch <= 0:
        raise UserError(f"--watch: must be a positive number of seconds, got {args.watch}")
    print_status(_store(args), args.run, fmt=args.format, watch=args.watch)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from evolve.report import print_candidate

    print_candidate(_store(args), args.candidate, fmt=args.format)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from evolve.report import print_compare

    print_compare(_store(args), args.a, args.b, fmt=args.format)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from evolve.export import export_run, verifiable, verify_export

    store = _store(args)
    if args.verify:
        verifiable(store, args.run)  # before writing anything
    result = export_run(store, args.run, args.out, candidate_id=args.candidate, overwrite=args.force,
                        progress=not args.quiet)
    console.print(f"exported {result.candidate_id} to {result.path} ({result.bytes / 2**20:.1f} MiB in "
                  f"{result.seconds:.1f} s)")
    if not args.verify:
        return 0
    from rich.table import Table

    check = verify_export(store, args.run, result.candidate_id, result.path)
    table = Table(title=f"verify: {result.path} re-scored from disk ({check.seconds:.1f} s)")
    for col in ("split", "task", "metric", "stored", "re-scored", "tolerance", "ok"):
        table.add_column(col)
    for r in check.rows:
        table.add_row(r["split"], r["task"], r["metric"], f"{r['stored']:.4f}",
                      "—" if r["rescored"] is None else f"{r['rescored']:.4f}", f"{r['tolerance']:.4f}",
                      "yes" if r["ok"] else "[red]NO[/]")
    console.print(table)
    if not check.ok:
        print(f"error: {result.path}: re-scored values differ from the stored ones beyond evaluation noise",
              file=sys.stderr)
        return 1
    console.print("verified: the exported model reproduces the stored scores")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from evolve.config import resolve_store_url
    from evolve.dashboard import resolve_token, serve

    token = resolve_token(args.host, args.token)  # refuse a public host without one before anything starts
    url = resolve_store_url(args.store, None)
    console.print(f"dashboard on http://{args.host}:{args.port}/ (store {url}, read-only"
                  f"{', token required' if token else ''}); Ctrl-C stops it")
    serve(url, host=args.host, port=args.port, token=token, poll_seconds=args.poll)
    return 0


def _cmd_zoo_build(args: argparse.Namespace) -> int:
    from workers.zoo import build_zoo

    zoo = build_zoo(args.dir, progress=True)
    names = list(zoo.models)
    if args.all:
        from workers.zoo.catalog import DERIVED

        for build in DERIVED:
            names += list(build.build(zoo.root, progress=True))
    console.print(f"zoo ready in {zoo.root}: {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evolve", description="Evolutionary search over LLM merge recipes.")
    sub = parser.add_subparsers(dest="command", required=True)

    merge = sub.add_parser("merge", help="materialise a recipe (ours or mergekit YAML) to a model directory")
    merge.add_argument("recipe", type=Path, help="recipe YAML/JSON file")
    merge.add_argument("--out", required=True, type=Path, help="output model directory (must not exist)")
    merge.add_argument("--shard-size", type=float, default=2048, help="max shard size in MiB (default 2048)")
    merge.add_argument("--force", action="store_true", help="replace --out if it exists")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=_cmd_merge)

    store_help = "store URL (default: $EVOLVE_STORE, else sqlite:///runs/evolve.db)"
    run = sub.add_parser("run", help="launch a search from a run config YAML")
    run.add_argument("config", type=Path)
    run.add_argument("--store", help=store_help)
    run.add_argument("--address", help="Ray cluster address (default: start a local cluster)")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=_cmd_run)

    pipeline = sub.add_parser("pipeline", help="run (or resume) a ps_then_dfs pipeline: the best PS merge "
                                                "becomes model A of a data-flow search")
    pipeline.add_argument("config", type=Path)
    pipeline.add_argument("--store", help=store_help)
    pipeline.add_argument("--quiet", action="store_true")
    pipeline.set_defaults(func=_cmd_pipeline)

    resume = sub.add_parser("resume", help="continue an interrupted run")
    resume.add_argument("run")
    resume.add_argument("--store", help=store_help)
    resume.add_argument("--force", action="store_true",
                        help="resume even while another driver's heartbeat is fresh, or after a FAILED stop")
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=_cmd_resume)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--store", help=store_help)
    runs.add_argument("--format", choices=("table", "json"), default="table")
    runs.set_defaults(func=_cmd_runs)

    board = sub.add_parser("leaderboard", help="rank a run's candidates")
    board.add_argument("run")
    board.add_argument("--split", choices=("validation", "test"), default="validation")
    board.add_argument("--top", "--limit", dest="top", type=int, default=20, help="rows to show (default 20)")
    board.add_argument("--task", help="rank by this task's validation score and show only it")
    board.add_argument("--pareto", action="store_true",
                       help="only the merges no other merge beats on every objective (validation scores)")
    board.add_argument("--objectives", metavar="T1,T2",
                       help="the Pareto front's tasks, comma-separated (default: the run's tasks)")
    board.add_argument("--format", choices=("table", "json", "csv"), default="table")
    board.add_argument("--store", help=store_help)
    board.set_defaults(func=_cmd_leaderboard)

    status = sub.add_parser("status", help="a run's progress: budget, best, rate, ETA, workers")
    status.add_argument("run")
    status.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until the run stops")
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.add_argument("--store", help=store_help)
    status.set_defaults(func=_cmd_status)

    show = sub.add_parser("show", help="one candidate: recipe, per-task and per-sample results, lineage")
    show.add_argument("candidate")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.add_argument("--store", help=store_help)
    show.set_defaults(func=_cmd_show)

    compare = sub.add_parser("compare", help="two candidates side by side")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--format", choices=("table", "json"), default="table")
    compare.add_argument("--store", help=store_help)
    compare.set_defaults(func=_cmd_compare)

    export = sub.add_parser("export", help="write a candidate (default: the best) as a model directory")
    export.add_argument("run")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--candidate", help="candidate id, e.g. a Pareto front member (default: best on validation)")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.add_argument("--verify", action="store_true",
                        help="reload the export from disk, re-score it on the run's tasks and compare")
    export.add_argument("--quiet", action="store_true")
    export.add_argument("--store", help=store_help)
    export.set_defaults(func=_cmd_export)

    dash = sub.add_parser("dashboard", help="read-only web dashboard of the store")
    dash.add_argument("--store", help=store_help)
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need a token)")
    dash.add_argument("--port", type=int, default=8765)
    dash.add_argument("--token", help="required on every request (default: $EVOLVE_DASHBOARD_TOKEN)")
    dash.add_argument("--poll", type=float, default=2.0, help="seconds between live updates (default 2)")
    dash.set_defaults(func=_cmd_dashboard)

    zoo = sub.add_parser("zoo", help="the embedded model zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_build = zoo_sub.add_parser("build", help="build (or find cached) the zoo")
    zoo_build.add_argument("--dir", type=Path, default=None, help="zoo folder (default: $EVOLVE_ZOO_DIR or the cache)")
    zoo_build.add_argument("--all", action="store_true",
                           help="also build the derived pairs (zoo:reader, zoo:adder, zoo:kind_reader, "
                                "zoo:kind_adder; docs/zoo.md); otherwise a run builds them when it names them")
    zoo_build.set_defaults(func=_cmd_zoo_build)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from workers.offline import go_offline

    go_offline()
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from evolve.loop import RunFailed

        if not isinstance(exc, RunFailed):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
