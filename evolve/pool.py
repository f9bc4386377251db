"""A fixed pool of Ray actors, one per GPU (or CPU slot), each scoring one candidate at a time.

Each worker slot reserves its resources with a Ray placement group of one bundle (one GPU by
default, ``gpus_per_worker`` for a tensor-parallel engine): Ray places it on any node with room,
and a slot whose node is lost gets a fresh group and actor wherever there is room again. A
cluster that cannot hold a slot at all fails the run with one line instead of waiting forever.

The pool only tracks which actor is busy and turns an actor's death into an outcome with
status ``lost``; the loop decides what to do about it (retry elsewhere, bounded).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import ray

from search_spaces.errors import UserError
from search_spaces.recipe import Recipe
from workers.outcome import SCORER_ERROR, EvalOutcome

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
PLACEMENT_TIMEOUT_SECONDS = 120.0  # how long a worker slot may wait for room in the cluster


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
    target = address.removeprefix("ray://").removeprefix("http://")
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
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, which `ray job submit` sets for its
    entrypoint), or start a local one (the default)."""
    if ray.is_initialized():
        return
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_QuietAuthBanner())
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    else:
        # "local": a new cluster of our own, never one some other process left running here
        # (plain ray.init() would silently join the newest cluster on the machine).
        ray.init(address="local", num_cpus=num_cpus, log_to_driver=False, include_dashboard=False,
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

    def node(self) -> str:
        """The Ray node this actor runs on (stored with each evaluation as its host)."""
        return ray.get_runtime_context().get_node_id()


class WorkerPool:
    """Worker slots, each a placement group and the actor in it.

    A slot is *placed* once its group has room and its actor exists. At start every slot must be
    placed within ``placement_timeout``; a slot replaced later (its actor died, perhaps with its
    node) waits for room without holding up the other slots, and the loop carries on with them.
    """

    def __init__(self, size: int, spec: WorkerSpec, placement_timeout: float = PLACEMENT_TIMEOUT_SECONDS):
        self.spec = spec
        self.placement_timeout = placement_timeout
        self.groups: list[Any] = [None] * size
        self._ready: list[Any] = [None] * size  # per slot: its group's ready() ObjectRef
        self.actors: list[Any] = [None] * size  # None while the slot waits for room
        self._nodes: list[Any] = [None] * size  # per slot: the node id, or a pending ObjectRef of it
        self._busy: set[int] = set()
        try:
            for slot in range(size):
                self._reserve(slot)
            self.wait_for_room(self.placement_timeout, every_slot=True)
            ray.get([a.ready.remote() for a in self.actors])
            self._nodes = ray.get(self._nodes)
        except ray.exceptions.RayActorError as exc:
            self.shutdown()
            cause = str(exc).strip().splitlines()[-1]
            raise WorkerStartError(f"a worker could not start ({spec.factory}): {cause}") from None
        except WorkerStartError:
            self.shutdown()
            raise

    @property
    def bundle(self) -> dict[str, float]:
        """What one worker slot reserves."""
        bundle = {"CPU": float(self.spec.num_cpus)}
        if self.spec.num_gpus:
            bundle["GPU"] = float(self.spec.num_gpus)
        return bundle

    def _reserve(self, slot: int) -> None:
        """Ask Ray for a fresh placement group for ``slot`` (its actor comes once it is ready)."""
        from ray.util.placement_group import placement_group, remove_placement_group

        if self.groups[slot] is not None:
            remove_placement_group(self.groups[slot])
        self.groups[slot] = placement_group([self.bundle], strategy="PACK")
        self._ready[slot] = self.groups[slot].ready()  # one probe per group, polled until it answers
        self.actors[slot] = None
        self._nodes[slot] = None

    def _place(self) -> None:
        """Start the actor of every slot whose placement group has become ready."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        for slot in self.waiting():
            group = self.groups[slot]
            ready, _ = ray.wait([self._ready[slot]], timeout=0)
            if not ready:
                continue
            self.actors[slot] = _WorkerActor.options(
                num_cpus=self.spec.num_cpus, num_gpus=self.spec.num_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
            ).remote(self.spec.factory, self.spec.kwargs)
            self._nodes[slot] = self.actors[slot].node.remote()

    def waiting(self) -> list[int]:
        """Slots still waiting for room in the cluster."""
        return [i for i, actor in enumerate(self.actors) if actor is None]

    def wait_for_room(self, timeout: float, every_slot: bool = False) -> None:
        """Block until one waiting slot (or, with ``every_slot``, all of them) is placed."""
        deadline = time.monotonic() + timeout
        before = len(self.waiting())
        while True:
            self._place()
            left = len(self.waiting())
            if left == 0 or (not every_slot and left < before):
                return
            if time.monotonic() >= deadline:
                free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
                raise WorkerStartError(f"resources: no node has room for a worker ({self.bundle}) after "
                                       f"{timeout:.0f} s; the cluster has {free} free")
            time.sleep(0.2)

    @property
    def size(self) -> int:
        return len(self.actors)

    def idle(self) -> list[int]:
        """Placed slots with no candidate in flight."""
        self._place()
        return [i for i, actor in enumerate(self.actors) if actor is not None and i not in self._busy]

    def submit(self, worker: int, recipe: Recipe) -> ray.ObjectRef:
        self._busy.add(worker)
        return self.actors[worker].evaluate.remote(recipe)

    def release(self, worker: int) -> None:
        self._busy.discard(worker)

    def replace(self, worker: int) -> None:
        """A lost actor's slot gets a new placement group (its node may be gone) and, once that
        has room, a fresh actor; never waits."""
        try:
            ray.kill(self.actors[worker])
        except Exception:  # already gone
            pass
        self._reserve(worker)
        self._busy.discard(worker)
        self._place()

    def node_of(self, worker: int) -> str | None:
        """The node ``worker``'s actor runs on; None while a new actor is still starting
        (never waits: the loop must keep serving the other workers)."""
        node = self._nodes[worker]
        if isinstance(node, ray.ObjectRef):
            ready, _ = ray.wait([node], timeout=0)
            if not ready:
                return None
            try:
                node = self._nodes[worker] = ray.get(node)
            except ray.exceptions.RayActorError:
                return None
        return node

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
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                if actor is not None:
                    ray.kill(actor)
            except Exception:
                pass
        for group in self.groups:
            if group is not None:
                try:
                    remove_placement_group(group)
                except Exception:
                    pass
