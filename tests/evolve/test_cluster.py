"""The cluster path, as far as this machine allows: a real two-node Ray cluster (a head and a
second node, each its own `ray start` process with its own resources), the store on a real
PostgreSQL server, a node killed mid-run, and the database restarted mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml

from evolve.store import Store
from evolve.store.records import EvaluationStatus, RunStatus
from tests.evolve.conftest import PostgresServer
from tests.fixtures.run_configs import config_dict

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# The test cluster runs without Ray's token authentication (its default for `ray start` nodes
# needs the same token on every node and driver; docs/cluster.md shows how to keep it on).
ENV = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayNode:
    """One `ray start --block` process (and everything it starts, in its own process group)."""

    def __init__(self, *args: str, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def cluster(tmp_path):
    """A head (1 CPU) and a second node (1 CPU); yields (address, second node)."""
    ray.shutdown()  # never reuse a local cluster another test module started
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                   f"--temp-dir={tempfile.mkdtemp(prefix='ray-')}",  # short: Ray's socket paths are limited
                   log=tmp_path / "head.log")
    second = None
    try:
        _wait_for_nodes(address, 1, head)
        second = RayNode(f"--address={address}", "--num-cpus=1", log=tmp_path / "second.log")
        _wait_for_nodes(address, 2, head)
        yield address, second
    finally:
        if second is not None:
            second.kill()
        head.kill()  # each node's process group: never `ray stop`, which would stop every cluster here


def _wait_for_nodes(address: str, n: int, head: RayNode, timeout: float = 120) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert head.proc.poll() is None, "the Ray head exited"
        done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=60,
                              env=ENV)
        if done.returncode == 0 and done.stdout.strip().isdigit() and int(done.stdout.strip()) >= n:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} never had {n} live nodes")


@pytest.fixture
def postgres():
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run_cli(config: dict, tmp_path: Path, url: str, address: str, background: bool = False, as_job: bool = False):
    """``evolve run --address A``, or as `ray job submit` runs an entrypoint: ``$RAY_ADDRESS`` set."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [sys.executable, "-m", "evolve.cli", "run", str(path), "--quiet", "--store", url]
    env = dict(ENV, RAY_ADDRESS=address) if as_job else ENV
    if not as_job:
        args += ["--address", address]
    if background:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(args, capture_output=True, text=True, timeout=400, env=env)


def _search_evaluations(store: Store, run_id: str):
    searched = {c.id for c in store.list_candidates(run_id, kind="search")}
    return [e for e in store.list_evaluations(run_id) if e.candidate_id in searched]


def test_a_search_runs_on_both_nodes_with_the_store_on_postgresql(cluster, postgres, family, tmp_path):
    address, _ = cluster
    url = postgres.new_database()
    config = config_dict(family, budget={"max_evaluations": 12}, evaluation={"engine_kwargs": {"delay": 0.3}})
    done = _run_cli(config, tmp_path, url, address, as_job=True)
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(url)
    (run,) = store.list_runs()
    assert run.status == RunStatus.FINISHED
    evaluations = store.list_evaluations(run.id)
    assert len(evaluations) == 12 + 3 and all(e.status == EvaluationStatus.COMPLETE for e in evaluations)
    assert len({e.host for e in evaluations}) == 2  # one worker per node: candidates ran on both


def test_losing_a_node_mid_run_loses_and_repeats_nothing(cluster, postgres, family, tmp_path):
    address, second = cluster
    url = postgres.new_database()
    config = config_dict(family, budget={"max_evaluations": 16}, evaluation={"engine_kwargs": {"delay": 0.5}},
                         resources={"max_retries": 3})
    driver = _run_cli(config, tmp_path, url, address, background=True)
    store = None
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        try:
            store = store or Store(url)
            runs = store.list_runs()
            if runs and sum(e.status == EvaluationStatus.COMPLETE for e in store.list_evaluations(runs[0].id)) >= 6:
                break
        except Exception:  # the driver has not created the schema yet
            pass
        time.sleep(0.3)
    assert driver.poll() is None, driver.stderr.read()[-3000:]
    second.kill()  # the second node and its worker, mid-run
    assert driver.wait(timeout=400) == 0, driver.stderr.read()[-3000:]

    (run,) = store.list_runs()
    assert store.get_run(run.id).status == RunStatus.FINISHED
    evaluations = _search_evaluations(store, run.id)
    complete = [e for e in evaluations if e.status == EvaluationStatus.COMPLETE]
    # Every candidate the strategy asked for was scored exactly once; the lost one was retried.
    assert len(complete) == len({e.candidate_id for e in complete}) == 16
    lost = [e for e in evaluations if e.status == EvaluationStatus.FAILED]
    assert lost and all(e.error_kind == "worker_lost" for e in lost)
    assert {e.candidate_id for e in lost} <= {e.candidate_id for e in complete}


def test_a_postgresql_restart_mid_run_loses_no_result(postgres, family, tmp_path):
    """The driver keeps writing through a server restart: each write is retried until it is back."""
    from evolve import runner
    from evolve.config import RunConfig
    from evolve.pool import connect
    from evolve.preflight import check_run

    ray.shutdown()
    connect(None, num_cpus=2)
    url = postgres.new_database()
    config = RunConfig.model_validate(config_dict(family, budget={"max_evaluations": 20},
                                                  evaluation={"engine_kwargs": {"delay": 0.3}}))
    store = Store(url)
    result: dict = {}

    def drive() -> None:
        try:
            result["outcome"] = runner.start(store, check_run(config), progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    watcher = Store(url)
    deadline = time.time() + 120
    while time.time() < deadline and not result:
        runs = watcher.list_runs()
        if runs and sum(e.status == EvaluationStatus.COMPLETE for e in watcher.list_evaluations(runs[0].id)) >= 6:
            break
        time.sleep(0.2)
    watcher.close()
    postgres.restart(down_seconds=3.0)
    thread.join(timeout=300)
    ray.shutdown()
    assert "error" not in result, repr(result.get("error"))
    run_id = result["outcome"].run_id
    after = Store(url)
    assert after.get_run(run_id).status == RunStatus.FINISHED
    complete = [e for e in after.list_evaluations(run_id) if e.status == EvaluationStatus.COMPLETE]
    assert len(complete) == len({e.candidate_id for e in complete}) == 20 + 3
    assert len(after.list_snapshots(run_id)) == 20  # every tell recorded


def test_several_runs_share_one_postgresql_store_at_once(cluster, postgres, family, tmp_path):
    """Two drivers, two searches, one database, at the same time: each run keeps its own rows."""
    address, _ = cluster
    url = postgres.new_database()
    drivers = []
    for i in range(2):
        work = tmp_path / f"driver{i}"
        work.mkdir()
        config = config_dict(family, name=f"concurrent-{i}", budget={"max_evaluations": 8},
                             strategy={"name": "random", "seed": i, "settings": {}},
                             evaluation={"engine_kwargs": {"delay": 0.3}}, resources={"workers": 1})
        drivers.append(_run_cli(config, work, url, address, background=True))
    for driver in drivers:
        assert driver.wait(timeout=400) == 0, driver.stderr.read()[-3000:]
    store = Store(url)
    runs = store.list_runs()
    assert sorted(r.name for r in runs) == ["concurrent-0", "concurrent-1"]
    for run in runs:
        assert run.status == RunStatus.FINISHED
        evaluations = store.list_evaluations(run.id)
        assert len(evaluations) == 8 + 3 and all(e.status == EvaluationStatus.COMPLETE for e in evaluations)
        assert {c.run_id for c in store.list_candidates(run.id)} == {run.id}
