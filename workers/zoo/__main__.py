"""``python -m workers.zoo [build] [--dir DIR] [--force] [--quiet]``: build the zoo and print
where it is (the product's CLI wires the same function to ``evolve zoo build``)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from workers.zoo import build_zoo, default_zoo_dir

    parser = argparse.ArgumentParser(prog="python -m workers.zoo", description=__doc__)
    parser.add_argument("command", nargs="?", default="build", choices=["build"])
    parser.add_argument("--dir", default=None, help=f"zoo directory (default: {default_zoo_dir()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    zoo = build_zoo(args.dir, progress=not args.quiet, force=args.force)
    manifest = zoo.manifest
    print(f"zoo: {zoo.root}")
    print(f"tasks include path: {zoo.tasks.include_path}")
    print(f"build seconds: {json.dumps(manifest['build_seconds'])}")
    for name, scores in manifest["quick_scores_test"].items():
        print(f"  {name:<13}" + "  ".join(f"{t}={s:.2f}" for t, s in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
