"""The driver's heartbeat: proof, on the database clock, that a run's driver is alive.

A daemon thread beats the run and every evaluation in flight each `INTERVAL_SECONDS`, from
before the workers start until the run ends, so a slow start (a vLLM engine, a zoo build)
never looks like a dead driver. `GRACE_SECONDS` is well above the interval (12x, as Optuna
advises): `evolve resume` refuses a run beaten more recently than that, and only then are
its RUNNING evaluations declared STALE.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from evolve.store import Store, StoreError

INTERVAL_SECONDS = 5.0
GRACE_SECONDS = 60.0

log = logging.getLogger(__name__)


class DriverHeartbeat:
    """``with DriverHeartbeat(store, run_id, evaluations=lambda: ids):`` beats until the block ends."""

    def __init__(self, store: Store, run_id: str, evaluations: Callable[[], Iterable[int]] = tuple,
                 interval: float = INTERVAL_SECONDS) -> None:
        self._store = store
        self._run_id = run_id
        self._evaluations = evaluations
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def beat(self) -> None:
        self._store.heartbeat_run(self._run_id)
        for evaluation_id in list(self._evaluations()):
            try:
                self._store.heartbeat_evaluation(evaluation_id)
            except StoreError:  # finished meanwhile: nothing to keep alive
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except StoreError as exc:  # a transient database error; the next beat may succeed
                log.warning("heartbeat of run %s failed: %s", self._run_id, exc)

    def __enter__(self) -> DriverHeartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
