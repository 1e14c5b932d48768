"""The worker pool on Ray: one long-lived actor per worker, each holding a :class:`WorkerRuntime`.

The only module that imports ``ray`` (lazily, when a pool is made). Ray does the cluster work:
placing actors on nodes (``num_gpus=1`` per GPU worker, a fraction of a CPU for CPU workers),
carrying messages and file bytes through its object store (a streaming generator per prompt, so
events arrive in order), and telling us when an actor dies (``RayActorError``).

Workers are actors named ``plexus-worker-N`` in the pool's namespace. With ``target=None`` the pool
keeps one worker per GPU of the cluster (one per node when it has none), re-counted on every
``poll``: a machine that joins gets workers, and they start taking prompts once ready.
"""
from __future__ import annotations

import itertools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cluster.pool import WorkerLost

log = logging.getLogger(__name__)
ACTOR_CONCURRENCY = 4   # run + interrupt / free / stats at the same time


class _WorkerActor:
    """The actor body (wrapped with ``ray.remote`` at pool start)."""

    def __init__(self, worker_id: str, build: Callable[..., Any], threads: int | None = None):
        from cluster.runtime import WorkerRuntime

        use_threads(threads)   # before the runtime imports torch

        remove_stale_scratch(Path(tempfile.gettempdir()))
        scratch = Path(tempfile.gettempdir()) / f"plexus-{worker_id}-{os.getpid()}"
        self.runtime = WorkerRuntime(worker_id, build, scratch)

    def ready(self) -> dict[str, Any]:
        return self.stats()

    def run(self, record: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        yield from self.runtime.run(record)

    def interrupt(self, prompt_id: str | None) -> None:
        self.runtime.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self.runtime.free(unload_models, free_memory)

    def stats(self) -> dict[str, Any]:
        import socket

        stats = self.runtime.stats()
        stats.setdefault("host", socket.gethostname())
        stats.setdefault("pid", os.getpid())
        return stats


class RayPool:
    """:class:`cluster.pool.WorkerPool` on Ray actors."""

    def __init__(self, build: Callable[..., Any], *, address: str | None = None, target: int | None = None,
                 num_cpus: float = 1.0, num_gpus: float | None = 0.0, cpu_only: bool = False,
                 namespace: str = "plexus", init_kwargs: dict[str, Any] | None = None,
                 threads: int | None = None):
        import ray

        self.ray = ray
        self.build = build
        self.target = target
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.threads = threads if threads is not None else _env_threads()
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs = {"namespace": namespace, "log_to_driver": False, "include_dashboard": False,
                      **(init_kwargs or {})}
            if address not in (None, "auto-local"):
                kwargs["address"] = address
            kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": _program_path()}})
            ray.init(**kwargs)
            self._owns_ray = True
        if self.num_gpus is None:  # one GPU per worker when the cluster has GPUs
            self.num_gpus = 0.0 if cpu_only or not ray.cluster_resources().get("GPU") else 1.0
        self._actor_class = ray.remote(max_concurrency=ACTOR_CONCURRENCY)(_WorkerActor)
        self._names = (f"plexus-worker-{i}" for i in itertools.count(1))
        self._starting: dict[str, tuple[Any, Any]] = {}      # id -> (actor, ready ref)
        self.actors: dict[str, Any] = {}                     # ready workers

    # -- membership -----------------------------------------------------------------------------

    def wanted(self) -> int:
        if self.target is not None:
            return self.target
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return gpus if gpus and self.num_gpus else max(nodes, 1)

    def add_worker(self) -> str:
        worker_id = next(self._names)
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "name": worker_id, "max_restarts": 0}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        actor = self._actor_class.options(**options).remote(worker_id, self.build, self.threads)
        self._starting[worker_id] = (actor, actor.ready.remote())
        return worker_id

    def poll(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        while len(self._starting) + len(self.actors) < self.wanted():
            self.add_worker()
        joined: dict[str, dict[str, Any]] = {}
        gone: list[str] = []
        if self._starting:
            refs = {ref: wid for wid, (_, ref) in self._starting.items()}
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in done:
                worker_id = refs[ref]
                actor, _ = self._starting.pop(worker_id)
                try:
                    joined[worker_id] = self.ray.get(ref)
                    self.actors[worker_id] = actor
                except Exception as exc:  # the actor failed to build its runtime
                    log.error("worker %s failed to start: %s", worker_id, exc)
        return joined, gone

    def remove(self, worker_id: str) -> None:
        actor = self.actors.pop(worker_id, None) or (self._starting.pop(worker_id, (None,))[0])
        if actor is not None:
            self.ray.kill(actor)
        if self.target is not None:
            self.target = max(self.target - 1, 0)

    def forget(self, worker_id: str) -> None:
        """A worker died: drop it (``poll`` starts a replacement to keep the target count)."""
        self.actors.pop(worker_id, None)

    # -- work -----------------------------------------------------------------------------------

    def run(self, worker_id: str, record: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        actor = self.actors.get(worker_id)
        if actor is None:
            raise WorkerLost(worker_id, "not a running worker")
        try:
            for ref in actor.run.options(num_returns="streaming").remote(record):
                yield self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            raise WorkerLost(worker_id, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc

    def interrupt(self, worker_id: str, prompt_id: str | None) -> None:
        actor = self.actors.get(worker_id)
        if actor is not None:
            actor.interrupt.remote(prompt_id)

    def free(self, worker_id: str, *, unload_models: bool, free_memory: bool) -> None:
        actor = self.actors.get(worker_id)
        if actor is not None:
            actor.free.remote(unload_models, free_memory)

    def stats(self, worker_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        actor = self.actors.get(worker_id)
        if actor is None:
            return {}
        try:
            return self.ray.get(actor.stats.remote(), timeout=timeout_s)
        except Exception as exc:  # busy past the timeout, or dead
            return {"error": f"{type(exc).__name__}"}

    def shutdown(self) -> None:
        for actor in list(self.actors.values()) + [a for a, _ in self._starting.values()]:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors.clear()
        self._starting.clear()
        if self._owns_ray:
            self.ray.shutdown()


def remove_stale_scratch(root: Path) -> list[Path]:
    """Scratch folders (``plexus-<worker>-<pid>``) of worker processes that are gone (a killed actor
    leaves its folder behind): removed when a worker starts on that machine."""
    import shutil

    removed = []
    for folder in root.glob("plexus-plexus-worker-*-*"):
        pid = folder.name.rpartition("-")[2]
        if not (pid.isdigit() and folder.is_dir()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue                  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue                  # another user's process
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _env_threads() -> int | None:
    """The front end's own ``OMP_NUM_THREADS``, when set: its workers use the same."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def use_threads(threads: int | None) -> None:
    """Give the worker the intra-op thread count single-machine mode would use on its node.

    Ray sets ``OMP_NUM_THREADS`` in an actor to its CPU reservation (1 for a fraction of a CPU) when
    the node's environment has none, so torch in a worker would run with another thread count than
    a single-machine Plexus on the same machine — and float reductions split differently give
    different pixels. ``threads`` (``--ray-worker-threads``, or the front end's ``OMP_NUM_THREADS``)
    sets the count; None drops Ray's default so torch picks its own, as it does on one machine.
    """
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
    torch = sys.modules.get("torch")
    if torch is not None and threads:   # imported already (a custom build): set it directly
        torch.set_num_threads(threads)


def _program_path() -> str:
    """The directory holding Plexus's packages, put on the workers' PYTHONPATH (same path on every
    machine of the cluster)."""
    root = str(Path(__file__).resolve().parents[1])
    existing = os.environ.get("PYTHONPATH")
    return root if not existing else f"{root}{os.pathsep}{existing}"
