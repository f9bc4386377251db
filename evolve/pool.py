"""A fixed pool of Ray actors, one per GPU (or CPU slot), each scoring one candidate at a time.

The pool only tracks which actor is busy and turns an actor's death into an outcome with
status ``lost``; the loop decides what to do about it (retry elsewhere, bounded).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import ray

from search_spaces.errors import UserError
from search_spaces.recipe import Recipe
from workers.outcome import SCORER_ERROR, EvalOutcome

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0


class WorkerStartError(UserError):
    """A worker actor failed in its constructor (bad models or settings, usually)."""


class ClusterUnreachableError(UserError):
    """``--address`` names no Ray cluster this machine can reach."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to build one worker actor: the factory is imported inside the actor's process."""

    factory: str  # "module:Class" of a `workers.outcome.RecipeScorer`
    kwargs: dict[str, Any]
    num_cpus: float = 1
    num_gpus: float = 0


class _QuietAuthBanner(logging.Filter):
    """Drops Ray's "Token authentication is enabled" notice, printed on every local start;
    every other Ray warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Fail in seconds, with one line, when ``host:port`` (or ``ray://host:port``) does not answer.

    ``ray.init`` itself retries an unreachable GCS for minutes before giving up.
    """
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachableError(f"resources.address: '{address}' is not 'host:port', 'ray://host:port' or 'auto'")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterUnreachableError(f"resources.address: no Ray cluster answers at {address} ({reason})") from None


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local one (the default)."""
    if ray.is_initialized():
        return
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_QuietAuthBanner())
    if address:
        check_reachable(address)
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    else:
        ray.init(num_cpus=num_cpus, log_to_driver=False, include_dashboard=False,
                 configure_logging=False)


@ray.remote(max_restarts=0, max_task_retries=0)
class _WorkerActor:
    def __init__(self, factory: str, kwargs: dict[str, Any]):
        import importlib

        module, func = factory.split(":")
        self.scorer = getattr(importlib.import_module(module), func)(**kwargs)

    def ready(self) -> bool:
        return True

    def evaluate(self, recipe: Recipe) -> EvalOutcome:
        return self.scorer.evaluate(recipe)

    def pid(self) -> int:
        import os

        return os.getpid()


class WorkerPool:
    def __init__(self, size: int, spec: WorkerSpec):
        self.spec = spec
        self.actors = [self._start() for _ in range(size)]
        self._busy: set[int] = set()
        try:
            ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayActorError as exc:
            self.shutdown()
            cause = str(exc).strip().splitlines()[-1]
            raise WorkerStartError(f"a worker could not start ({spec.factory}): {cause}") from None

    def _start(self):
        return _WorkerActor.options(num_cpus=self.spec.num_cpus, num_gpus=self.spec.num_gpus).remote(
            self.spec.factory, self.spec.kwargs)

    @property
    def size(self) -> int:
        return len(self.actors)

    def idle(self) -> list[int]:
        return [i for i in range(len(self.actors)) if i not in self._busy]

    def submit(self, worker: int, recipe: Recipe) -> ray.ObjectRef:
        self._busy.add(worker)
        return self.actors[worker].evaluate.remote(recipe)

    def release(self, worker: int) -> None:
        self._busy.discard(worker)

    def replace(self, worker: int) -> None:
        """Start a fresh actor in a lost one's slot."""
        try:
            ray.kill(self.actors[worker])
        except Exception:  # already gone
            pass
        self.actors[worker] = self._start()
        self._busy.discard(worker)

    def wait(self, refs: list[ray.ObjectRef], timeout: float) -> list[tuple[ray.ObjectRef, EvalOutcome]]:
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                out.append((ref, EvalOutcome.lost(type(exc).__name__)))
            except ray.exceptions.RayTaskError as exc:  # a bug in the scorer: this candidate fails
                out.append((ref, EvalOutcome.failed(SCORER_ERROR, str(exc).strip().splitlines()[-1])))
        return out

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
