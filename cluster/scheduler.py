"""The dispatcher's bookkeeping: which workers exist, what each holds, which prompt each runs.

No threads, no clock, no Ray: the live dispatcher (:mod:`cluster.dispatcher`) and the benchmark's
simulation (``bench/cluster.py``) call the same methods with their own notion of time, so the
simulation exercises exactly the routing code the server runs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.needs import ModelNeeds
from cluster.routing import (
    Assignment,
    PendingPrompt,
    WorkerView,
    route_by_residency,
    route_least_loaded,
    route_round_robin,
)

POLICIES = ("residency", "round-robin", "least-loaded")


@dataclass
class WorkerState:
    worker_id: str
    info: dict[str, Any] = field(default_factory=dict)     # device, memory ... (for /system_stats)
    resident: ModelNeeds = ModelNeeds()
    last_switch_s: float = 0.0
    running: str | None = None                              # prompt id
    is_draining: bool = False
    busy_s: float = 0.0
    started_s: float = 0.0
    prompts_run: int = 0
    model_loads: int = 0

    def view(self) -> WorkerView:
        return WorkerView(self.worker_id, is_free=self.running is None, resident=self.resident,
                          last_switch_s=self.last_switch_s, accepts=not self.is_draining, busy_s=self.busy_s)


class Scheduler:
    """Workers and their state; ``plan`` asks the routing policy which free worker runs what."""

    def __init__(self, policy: str = "residency", *, max_wait_s: float | None = None):
        if policy not in POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; one of {', '.join(POLICIES)}")
        self.policy = policy
        self.max_wait_s = max_wait_s
        self.workers: dict[str, WorkerState] = {}
        self._turn = 0

    # -- membership -------------------------------------------------------------------------------

    def add_worker(self, worker_id: str, info: dict[str, Any] | None = None, *, now_s: float = 0.0) -> WorkerState:
        state = self.workers.get(worker_id) or WorkerState(worker_id, last_switch_s=now_s)
        state.info.update(info or {})
        self.workers[worker_id] = state
        return state

    def remove_worker(self, worker_id: str) -> WorkerState | None:
        return self.workers.pop(worker_id, None)

    def drain(self, worker_id: str) -> None:
        """Stop giving the worker prompts; it finishes the one it runs."""
        if worker_id in self.workers:
            self.workers[worker_id].is_draining = True

    # -- decisions --------------------------------------------------------------------------------

    def plan(self, pending: Sequence[PendingPrompt], now_s: float) -> list[Assignment]:
        views = [w.view() for w in self.workers.values()]
        if self.policy == "round-robin":
            assignments, self._turn = route_round_robin(pending, views, turn=self._turn)
            return assignments
        if self.policy == "least-loaded":
            return route_least_loaded(pending, views)
        kwargs = {} if self.max_wait_s is None else {"max_wait_s": self.max_wait_s}
        return route_by_residency(pending, views, now_s=now_s, **kwargs)

    # -- events -----------------------------------------------------------------------------------

    def started(self, worker_id: str, prompt_id: str, needs: ModelNeeds, now_s: float) -> bool:
        """Record that the worker runs the prompt; returns whether that switches its models (the
        prediction until the worker reports what it holds after the run)."""
        state = self.workers[worker_id]
        state.running, state.started_s = prompt_id, now_s
        switched = needs.key != state.resident.key and not (needs.files <= state.resident.files
                                                             and needs.loras == state.resident.loras)
        loads_files = not needs.files <= state.resident.files
        if switched:
            state.last_switch_s = now_s
            state.resident = ModelNeeds(needs.files if loads_files else state.resident.files | needs.files,
                                        needs.loras)
        state.model_loads += int(loads_files)
        return switched

    def finished(self, worker_id: str, now_s: float, resident: ModelNeeds | None = None) -> None:
        """The worker is free again; ``resident`` is what it reports holding (None: keep the prediction)."""
        state = self.workers.get(worker_id)
        if state is None:
            return
        if state.running is not None:
            state.busy_s += max(now_s - state.started_s, 0.0)
            state.prompts_run += 1
        state.running = None
        if resident is not None:
            state.resident = resident

    def running_on(self, prompt_id: str) -> str | None:
        return next((w.worker_id for w in self.workers.values() if w.running == prompt_id), None)

    def free_workers(self) -> list[str]:
        return [w.worker_id for w in self.workers.values() if w.running is None and not w.is_draining]


def pending_from_entries(entries: Sequence[Sequence[Any]], queued_at_s: Callable[[str], float],
                         needs_of: Callable[[dict], ModelNeeds], pin_of: Callable[[dict], str | None]
                         ) -> list[PendingPrompt]:
    """PendingPrompts from the store's ``[number, id, prompt, extra_data, outputs]`` entries."""
    return [PendingPrompt(str(e[1]), needs_of(e[2]), pin_of(e[3]), queued_at_s(str(e[1]))) for e in entries]
