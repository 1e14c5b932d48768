"""Routing policies: pure functions from (pending prompts, workers) to ``[(prompt_id, worker_id)]``.

Only free workers that accept work receive a prompt, at most one each; a worker runs one prompt at a
time. ``route_by_residency`` is the dispatcher's policy; ``route_round_robin`` and
``route_least_loaded`` are model-blind baselines for ``bench/cluster.py``.

Residency-aware routing, in order:

1. a prompt pinned to a worker (``extra_data["plexus"]["worker"]``) goes only to that worker, when
   it is free (it waits otherwise; nobody else takes it);
2. a prompt that has waited longer than ``max_wait_s`` goes to the best free worker (no starvation);
3. each prompt, oldest first, goes to a free worker that already holds its model files (one that
   also holds its LoRA set first) — so a worker keeps taking prompts for its models even when older
   prompts for other models are queued (same-model prompts stick together);
4. what is left is switched onto the remaining free workers, oldest first, but only where that pays:
   nobody holds the prompt's models, or more such prompts are queued than workers hold them. The
   worker chosen to switch is one whose models no queued prompt needs, else the least recently
   switched one.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.needs import ModelNeeds

DEFAULT_MAX_WAIT_S = 120.0


@dataclass(frozen=True)
class PendingPrompt:
    prompt_id: str
    needs: ModelNeeds = ModelNeeds()
    pinned_worker: str | None = None
    queued_at_s: float = 0.0


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    is_free: bool = True
    resident: ModelNeeds = ModelNeeds()
    last_switch_s: float = 0.0
    accepts: bool = True          # False while draining
    busy_s: float = 0.0           # total time spent running (least-loaded baseline)


Assignment = tuple[str, str]


def match_score(needs: ModelNeeds, resident: ModelNeeds) -> int:
    """2: files and LoRA set resident; 1: files resident (LoRAs re-patched); 0: a load is needed."""
    if not needs.files <= resident.files:
        return 0
    return 2 if needs.loras == resident.loras else 1


def route_by_residency(pending: Sequence[PendingPrompt], workers: Sequence[WorkerView], *, now_s: float = 0.0,
                       max_wait_s: float = DEFAULT_MAX_WAIT_S) -> list[Assignment]:
    """The dispatcher's routing decision (see the module docstring)."""
    known = {w.worker_id for w in workers}
    free = {w.worker_id: w for w in workers if w.is_free and w.accepts}
    accepting = [w for w in workers if w.accepts]
    assignments: list[Assignment] = []
    left: list[PendingPrompt] = []

    def take(prompt: PendingPrompt, worker_id: str) -> None:
        assignments.append((prompt.prompt_id, worker_id))
        del free[worker_id]

    for prompt in pending:                                     # 1. pins
        if prompt.pinned_worker is not None and prompt.pinned_worker in known:
            if prompt.pinned_worker in free:
                take(prompt, prompt.pinned_worker)
        else:
            left.append(prompt)
    holders = Counter()                                        # model key -> workers holding its files
    for key in {p.needs.key for p in left}:
        holders[key] = sum(1 for w in accepting if key[0] <= w.resident.files)
    demand = Counter(p.needs.key for p in left)

    def best_match(prompt: PendingPrompt, minimum: int) -> str | None:
        scored = [(match_score(prompt.needs, w.resident), -w.last_switch_s, w.worker_id) for w in free.values()]
        scored = [s for s in scored if s[0] >= minimum]
        return max(scored)[2] if scored else None

    def switch_target(still_wanted: set) -> str | None:
        if not free:
            return None
        return min(free.values(), key=lambda w: (w.resident.key in still_wanted, w.last_switch_s, w.worker_id)).worker_id

    remaining: list[PendingPrompt] = []
    for prompt in left:                                        # 2. prompts waiting too long
        if free and now_s - prompt.queued_at_s > max_wait_s:
            worker_id = best_match(prompt, 1) or switch_target({p.needs.key for p in left})
            take(prompt, worker_id)
            demand[prompt.needs.key] -= 1
        else:
            remaining.append(prompt)
    unmatched: list[PendingPrompt] = []
    for prompt in remaining:                                   # 3. resident models
        worker_id = best_match(prompt, 1) if free else None
        if worker_id is None:
            unmatched.append(prompt)
        else:
            take(prompt, worker_id)
            demand[prompt.needs.key] -= 1
    for index, prompt in enumerate(unmatched):                 # 4. switches that pay
        if not free:
            break
        key = prompt.needs.key
        if holders[key] == 0 or demand[key] > holders[key]:
            worker_id = switch_target({p.needs.key for p in unmatched[index + 1:]})
            take(prompt, worker_id)
            holders[key] += 1
            demand[key] -= 1
    return assignments


def _unpinned_fifo(pending: Sequence[PendingPrompt], free: list[WorkerView]) -> list[Assignment]:
    """Pinned prompts to their workers; the rest oldest first onto ``free`` in the order given."""
    assignments: list[Assignment] = []
    by_id = {w.worker_id: w for w in free}
    order = [w.worker_id for w in free]
    for prompt in pending:
        if prompt.pinned_worker is not None:
            if prompt.pinned_worker in by_id and prompt.pinned_worker in order:
                order.remove(prompt.pinned_worker)
                assignments.append((prompt.prompt_id, prompt.pinned_worker))
            continue
        if not order:
            break
        assignments.append((prompt.prompt_id, order.pop(0)))
    return assignments


def route_round_robin(pending: Sequence[PendingPrompt], workers: Sequence[WorkerView], *,
                      turn: int = 0) -> tuple[list[Assignment], int]:
    """Model-blind baseline: the head of the queue to the next free worker in a fixed cyclic order.
    Returns the assignments and the next turn."""
    ids = sorted(w.worker_id for w in workers)
    if not ids:
        return [], turn
    rotated = ids[turn % len(ids):] + ids[:turn % len(ids)]
    free_ids = {w.worker_id for w in workers if w.is_free and w.accepts}
    by_id = {w.worker_id: w for w in workers}
    free = [by_id[i] for i in rotated if i in free_ids]
    assignments = _unpinned_fifo(pending, free)
    if assignments:
        turn = (ids.index(assignments[-1][1]) + 1) % len(ids)
    return assignments, turn


def route_least_loaded(pending: Sequence[PendingPrompt], workers: Sequence[WorkerView]) -> list[Assignment]:
    """Model-blind baseline: the head of the queue to the free worker that has run least so far."""
    free = sorted((w for w in workers if w.is_free and w.accepts), key=lambda w: (w.busy_s, w.worker_id))
    return _unpinned_fifo(pending, free)
