"""The same search on a one-node and on a two-node Ray cluster, side by side (goal: near 2x).

Both clusters are real `ray start` processes on this machine, one CPU slot per node; the search
is the analytic scorer with a fixed delay per candidate (so the work, not this 2-core machine's
other load, sets the pace), driven by the real CLI with `--address`, store in SQLite.

    .venv/bin/python benchmarks/two_nodes.py [--evaluations 24] [--delay 2.0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds per candidate")
    args = parser.parse_args()

    from tests.evolve.test_cluster import RayNode, _free_port, _run_cli, _wait_for_nodes
    from tests.fixtures.run_configs import config_dict
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        family = write_family(tmp / "family", LlamaShape(layers=3), n_variants=2, seed=0)
        for nodes in (1, 2):
            port = _free_port()
            address = f"127.0.0.1:{port}"
            head = RayNode("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                           f"--temp-dir={tempfile.mkdtemp(prefix='ray-')}", log=tmp / f"head{nodes}.log")
            extra = []
            try:
                _wait_for_nodes(address, 1, head)
                if nodes == 2:
                    extra.append(RayNode(f"--address={address}", "--num-cpus=1", log=tmp / "second.log"))
                    _wait_for_nodes(address, 2, head)
                config = config_dict(family, budget={"max_evaluations": args.evaluations},
                                     evaluation={"engine_kwargs": {"delay": args.delay}},
                                     resources={"workers": nodes})
                work = tmp / f"run{nodes}"
                work.mkdir()
                start = time.perf_counter()
                done = _run_cli(config, work, f"sqlite:///{work / 'runs.db'}", address)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-2000:])
                rows.append((nodes, seconds))
            finally:
                for node in extra:
                    node.kill()
                head.kill()
    table = Table(title=f"{args.evaluations} evaluations (+3 references), {args.delay:g} s each, one worker per node")
    for col in ("nodes", "wall s (driver start to exit)", "speed-up"):
        table.add_column(col)
    for nodes, seconds in rows:
        table.add_row(str(nodes), f"{seconds:.1f}", f"{rows[0][1] / seconds:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
