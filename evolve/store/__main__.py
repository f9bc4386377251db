"""Schema maintenance: `python -m evolve.store upgrade [URL]` and `... current [URL]`.

URL defaults to `$EVOLVE_STORE`, else `sqlite:///runs/evolve.db`.
"""

from __future__ import annotations

import argparse
import sys

from evolve.store.engine import default_store_url, head_revision
from evolve.store.errors import StoreError
from evolve.store.store import Store, upgrade_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evolve.store", description=__doc__)
    parser.add_argument("action", choices=["upgrade", "current", "head"])
    parser.add_argument("url", nargs="?", default=None, help="store URL (default: %(default)s)")
    args = parser.parse_args(argv)
    url = args.url or default_store_url()
    try:
        if args.action == "head":
            print(head_revision())
        elif args.action == "upgrade":
            print(f"{url}: schema at {upgrade_schema(url)}")
        else:
            with Store(url) as store:
                print(store.schema_revision())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
