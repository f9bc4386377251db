"""How long a broken run costs before it is refused, per mistake, through the real CLI.

Each case is the demo config (`examples/zoo_demo.yaml`) with one field changed, run as
``evolve run CONFIG --store sqlite:///...``. The peer is what the same mistake cost before
pre-flight existed: a whole budget (60 evaluations, several minutes on this machine), and an
exit code of 0. Printed: wall time to the refusal, exit code, whether the store was written,
and the one line shown.

    .venv/bin/python benchmarks/preflight_refusals.py
"""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "zoo_demo.yaml"

CASES: dict[str, tuple[str, object]] = {
    "strategy typo": ("strategy.name", "cmaa"),
    "unknown strategy setting": ("strategy.settings", {"popsiz": 4}),
    "missing model directory": ("models.sources.0", "/nowhere/model"),
    "density bounds above 1": ("space.search", {"weight": [0, 1], "density": [0.2, 1.5]}),
    "unknown zoo model": ("models.base", "zoo:bass"),
    "unknown merge method": ("space.merge_method", "tiez"),
    "unknown searched parameter": ("space.search", {"wieght": [0, 1]}),
    "unknown lm-eval task": ("tasks.0.name", "zoo_targt"),
    "metric the task does not report": ("tasks.0.metric", "acc"),
    "layer_groups above the layer count": ("space.layer_groups", 9),
}


def edited(config: dict, dotted: str, value: object) -> dict:
    config = copy.deepcopy(config)
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return config


def refuse(config: dict, workdir: Path, *extra: str, store: str | None = None) -> tuple[float, int, bool, str]:
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    db = workdir / "runs.db"
    db.unlink(missing_ok=True)
    url = store or f"sqlite:///{db}"
    start = time.perf_counter()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "evolve"), "run", str(path), "--quiet", "--store", url, *extra],
                          capture_output=True, text=True, cwd=workdir, timeout=600)
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    return seconds, proc.returncode, db.exists(), (lines[-1] if lines else "") + (f"  [{len(lines)} lines]" if len(lines) != 1 else "")


def main() -> None:
    base = yaml.safe_load(DEMO.read_text())
    table = Table(title="pre-flight: time to refuse a broken run (real CLI, demo config with one field changed)")
    for col in ("case", "seconds", "exit", "store written", "message"):
        table.add_column(col, overflow="fold")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [(name, *refuse(edited(base, field, value), work)) for name, (field, value) in CASES.items()]
        rows.append(("--address 127.0.0.1:1", *refuse(base, work, "--address", "127.0.0.1:1")))
        rows.append(("unreachable PostgreSQL", *refuse(base, work, store="postgresql+psycopg://u@127.0.0.1:1/db")))
    for name, seconds, code, written, message in rows:
        table.add_row(name, f"{seconds:.1f}", str(code), "yes" if written else "no", message)
    Console(width=200).print(table)
    sys.exit(0 if all(code == 2 and not written for _, _, code, written, _ in rows) else 1)


if __name__ == "__main__":
    main()
