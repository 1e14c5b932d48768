"""Scale-out on Ray: measured with real worker actors, and simulated at 8-128 GPU workers.

(1) ``measure``: a local Ray cluster on this machine, 1, 2 and 4 CPU worker actors built exactly as
``main.py --ray`` builds them (the built-in nodes, a tiny random-weight SD1.5 checkpoint per model),
a batch of txt2img prompts over two checkpoints; prints throughput (prompts/min) and the median
and p95 latency (queued -> in history). Timing: run it under ``flock /tmp/plexus-heavy.lock``.

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/cluster.py measure [--workers 1 2 4] [--prompts 16]

(2) ``simulate``: the dispatcher's own Scheduler and routing functions (cluster/scheduler.py,
cluster/routing.py) driven by a discrete-event model of GPU workers: checkpoint load times per family
(disk -> GPU, SD1.5 / SDXL / SD3), LoRA re-patch time, per-step cost per family. Workload: 10
checkpoints (4 SD1.5, 4 SDXL, 2 SD3) with 0-3 LoRA sets each, drawn with Zipf popularity; a closed
loop keeps ``backlog x workers`` prompts queued (saturation), for ``--hours`` of simulated time.
Compares residency-aware routing with round-robin and least-loaded: throughput, p50/p95 latency,
model loads per hour, and per-worker scaling (throughput per worker relative to 8 workers).

    .venv/bin/python bench/cluster.py simulate [--workers 8 32 128] [--hours 1] [--seed 0]
"""
from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.needs import ModelNeeds  # noqa: E402
from cluster.routing import PendingPrompt  # noqa: E402
from cluster.scheduler import POLICIES, Scheduler  # noqa: E402

# -- the cost model (seconds on one datacenter GPU; loads from local NVMe, weights in fp16) ---------


@dataclass(frozen=True)
class Family:
    name: str
    load_s: float        # checkpoint file -> GPU (UNet, text encoders, VAE)
    step_s: float        # one sampling step at the family's native size (CFG batch of 2)
    steps: int
    fixed_s: float       # text encoding + VAE decode + PNG
    lora_s: float        # re-patching a LoRA set onto resident weights


FAMILIES = {
    "sd15": Family("SD1.5 512px", load_s=3.0, step_s=0.035, steps=25, fixed_s=0.25, lora_s=0.6),
    "sdxl": Family("SDXL 1024px", load_s=8.0, step_s=0.11, steps=30, fixed_s=0.6, lora_s=1.5),
    "sd3": Family("SD3 medium 1024px", load_s=11.0, step_s=0.13, steps=28, fixed_s=0.8, lora_s=1.8),
}
CHECKPOINTS = [("sd15", f"sd15-{i}.safetensors") for i in range(4)] + \
              [("sdxl", f"sdxl-{i}.safetensors") for i in range(4)] + \
              [("sd3", f"sd3-{i}.safetensors") for i in range(2)]


def workload(rng: random.Random) -> list[tuple[float, str, ModelNeeds]]:
    """(weight, family, needs) for every (checkpoint, LoRA set) combination, Zipf popularity."""
    combos = []
    for index, (family, ckpt) in enumerate(CHECKPOINTS):
        sets = [frozenset()] + [frozenset({f"lora-{ckpt[:-12]}-{j}.safetensors"}) for j in range(index % 4)]
        for lora_set in sets:
            combos.append((family, ModelNeeds(frozenset({ckpt}), lora_set)))
    rng.shuffle(combos)
    return [(1.0 / (rank + 1), family, needs) for rank, (family, needs) in enumerate(combos)]


def run_cost(family: Family, needs: ModelNeeds, resident: ModelNeeds) -> tuple[float, bool]:
    loads = not needs.files <= resident.files
    cost = family.steps * family.step_s + family.fixed_s
    if loads:
        cost += family.load_s + (family.lora_s if needs.loras else 0.0)
    elif needs.loras != resident.loras:
        cost += family.lora_s
    return cost, loads


def simulate(workers: int, policy: str, hours: float, backlog: float, seed: int) -> dict:
    rng = random.Random(seed)
    combos = workload(rng)
    weights = [w for w, _, _ in combos]
    scheduler = Scheduler(policy)
    for i in range(workers):
        scheduler.add_worker(f"gpu-{i:03}", now_s=0.0)
    horizon_s = hours * 3600.0
    pending: dict[str, tuple[PendingPrompt, Family]] = {}
    counter = iter(range(10**9))
    latencies: list[float] = []
    finishes: list[tuple[float, str, str, float]] = []   # (time, worker, prompt id, queued at)
    loads = done = 0
    now = 0.0

    def add_prompt(at: float) -> None:
        _, family, needs = rng.choices(combos, weights)[0]
        pid = f"p{next(counter)}"
        pending[pid] = (PendingPrompt(pid, needs, None, at), FAMILIES[family])

    for _ in range(int(backlog * workers)):
        add_prompt(0.0)
    while True:
        for prompt_id, worker_id in scheduler.plan([p for p, _ in pending.values()], now):
            prompt, family = pending.pop(prompt_id)
            cost, is_load = run_cost(family, prompt.needs, scheduler.workers[worker_id].resident)
            loads += is_load
            scheduler.started(worker_id, prompt_id, prompt.needs, now)
            heapq.heappush(finishes, (now + cost, worker_id, prompt_id, prompt.queued_at_s))
        if not finishes:
            break
        now, worker_id, prompt_id, queued_at = heapq.heappop(finishes)
        if now > horizon_s:
            break
        scheduler.finished(worker_id, now)
        done += 1
        latencies.append(now - queued_at)
        add_prompt(now)
    latencies.sort()
    return {"workers": workers, "policy": policy, "prompts_per_hour": done / hours,
            "p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
            "loads_per_hour": loads / hours}


def ideal_per_worker_per_hour(seed: int) -> float:
    """Prompts per hour of one worker that never loads a model (the mix's mean run time)."""
    combos = workload(random.Random(seed))
    total = sum(w for w, _, _ in combos)
    mean_s = sum(w * run_cost(FAMILIES[f], n, n)[0] for w, f, n in combos) / total
    return 3600.0 / mean_s


def cmd_simulate(args: argparse.Namespace) -> None:
    ideal = ideal_per_worker_per_hour(args.seed)
    rows = []
    for workers in args.workers:
        for policy in POLICIES:
            started = time.perf_counter()
            row = simulate(workers, policy, args.hours, args.backlog, args.seed)
            row["wall_s"] = time.perf_counter() - started
            rows.append(row)
    base = {r["policy"]: r["prompts_per_hour"] / r["workers"] for r in rows if r["workers"] == min(args.workers)}
    rr = {r["workers"]: r["prompts_per_hour"] for r in rows if r["policy"] == "round-robin"}
    print(f"ideal (no model loads): {ideal:.0f} prompts/h per worker; backlog {args.backlog} x workers; "
          f"{args.hours} h simulated")
    print("| workers | routing | prompts/h | x round-robin | per-worker vs %d workers | of ideal | p50 s | p95 s | "
          "model loads/h |" % min(args.workers))
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_worker = r["prompts_per_hour"] / r["workers"]
        print(f"| {r['workers']} | {r['policy']} | {r['prompts_per_hour']:.0f} | "
              f"{r['prompts_per_hour'] / rr[r['workers']]:.2f} | {per_worker / base[r['policy']]:.2f} | "
              f"{per_worker / ideal:.2f} | {r['p50_s']:.1f} | {r['p95_s']:.1f} | {r['loads_per_hour']:.0f} |")
    if args.json:
        print(json.dumps(rows, indent=2))


# -- (1) measured: real actors, real nodes, tiny models ------------------------------------------------


def cmd_measure(args: argparse.Namespace) -> None:
    import tempfile

    import ray

    import main
    from cluster.dispatcher import Dispatcher
    from cluster.outputs import OutputWriter
    from cluster.ray_pool import RayPool
    from execution.executor import PromptRecord
    from execution.store import PromptStore
    from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint

    base = Path(tempfile.mkdtemp(prefix="plexus-bench-cluster-"))
    ckpts = [f"bench-{i}.safetensors" for i in range(2)]
    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ckpts:
        write_random_checkpoint(base / "models" / "checkpoints" / name,
                                CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config()))
    template = json.loads((Path(main.PROGRAM_DIR) / "examples" / "txt2img_api.json").read_text())
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(main.PROGRAM_DIR), "OMP_NUM_THREADS": "1"}})
    print(f"| workers | prompts | wall s | prompts/min | p50 latency s | p95 latency s |")
    print("|---|---|---|---|---|---|")
    try:
        for workers in args.workers:
            cli = main.parse_args(["--base-directory", str(base), "--cpu", "--disable-all-custom-nodes"])
            app = main.build_app(cli)
            app.folders.ensure_dirs()
            store = PromptStore(None)
            pool = RayPool(main.functools.partial(main.build_worker_parts, cli), target=workers,
                           num_cpus=args.worker_cpus, threads=args.worker_threads)
            dispatcher = Dispatcher(store, app.events, pool, OutputWriter(app.folders.directory),
                                    poll_interval_s=0.2).start()
            assert dispatcher.wait_for_workers(workers, 300)
            warm = []   # load both checkpoints on every worker before timing (as a long-lived cluster)
            for w in list(dispatcher.scheduler.workers):
                for name in ckpts:
                    warm.append(_queue(store, template, name, args, pin=w))
            assert dispatcher.wait_idle(600)
            queued = {}
            started = time.perf_counter()
            for i in range(args.prompts):
                queued[_queue(store, template, ckpts[i % 2], args, seed=1000 + i)] = time.time()
            assert dispatcher.wait_idle(1800)
            wall_s = time.perf_counter() - started
            latencies = sorted(store.history_item(pid)["plexus"]["execution_end_time_ms"] / 1000 - t
                               for pid, t in queued.items())
            assert all(store.status_of(pid) == "success" for pid in queued)
            print(f"| {workers} | {args.prompts} | {wall_s:.1f} | {60 * args.prompts / wall_s:.1f} | "
                  f"{statistics.median(latencies):.2f} | {latencies[int(0.95 * (len(latencies) - 1))]:.2f} |",
                  flush=True)
            dispatcher.stop()
            store.close()
    finally:
        ray.shutdown()


def _queue(store, template: dict, ckpt: str, args: argparse.Namespace, seed: int = 0, pin: str | None = None) -> str:
    from execution.executor import PromptRecord

    prompt = json.loads(json.dumps(template))
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["3"]["inputs"].update(steps=args.steps, seed=seed)
    prompt["5"]["inputs"].update(width=args.size, height=args.size)
    extra = {"plexus": {"worker": pin}} if pin else {}
    return store.put(PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt, extra_data=extra,
                                  outputs_to_execute=["9"])).prompt_id


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate")
    sim.add_argument("--workers", type=int, nargs="+", default=[8, 32, 128])
    sim.add_argument("--hours", type=float, default=1.0)
    sim.add_argument("--backlog", type=float, default=2.0, help="queued prompts per worker (closed loop)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--json", action="store_true")
    real = commands.add_parser("measure")
    real.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    real.add_argument("--prompts", type=int, default=16)
    real.add_argument("--steps", type=int, default=4)
    real.add_argument("--size", type=int, default=64)
    real.add_argument("--worker-cpus", type=float, default=0.5)
    real.add_argument("--worker-threads", type=int, default=None,
                      help="torch threads per worker (default: as single-machine mode, all cores)")
    args = parser.parse_args()
    cmd_simulate(args) if args.command == "simulate" else cmd_measure(args)


if __name__ == "__main__":
    main_cli()
