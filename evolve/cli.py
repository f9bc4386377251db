"""The `evolve` command line.

User mistakes (`UserError`) print one line naming the culprit and exit with code 2, with no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from search_spaces.errors import UserError

console = Console(stderr=True)


def _cmd_merge(args: argparse.Namespace) -> int:
    from search_spaces.recipe import Recipe
    from workers.export import merge_to_disk

    recipe = Recipe.from_file(args.recipe)
    out = merge_to_disk(recipe, args.out, max_shard_bytes=int(args.shard_size * 2**20),
                        progress=not args.quiet, overwrite=args.force)
    console.print(f"merged {len(recipe.model_paths)} model(s) with {recipe.merge_method} into {out}")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
