"""The ControlNet's extra cost per sampling step, as a ratio of the plain step, on Plexus and on ComfyUI.

    flock /tmp/plexus-heavy.lock .venv/bin/python bench/controlnet_cost.py --peer-dir ../peer/ComfyUI \\
        --models-dir /tmp/cn-fidelity-models --size 512 --steps 2 4 --port-base 8460

Both servers (one after the other, `--cpu`, `--force-fp32` unless `--no-fp32`) run the same txt2img graph on
the full-size random SD1.5 checkpoint of bench/fidelity_cases/sd15.py, without and with a full-size random
SD1.5 ControlNet (ControlNetApplyAdvanced, strength 1, the whole schedule; files of
bench/fidelity_cases/controlnet.py, written once into `--models-dir`). After one unmeasured warm-up run,
each variant runs at two step counts; the KSampler node's time (from the `executing` websocket messages,
the same way on both servers) differs only by the steps, so s/step = time difference / step difference.
Reported: plain s/step, controlled s/step and their ratio per server (the ControlNet's extra cost is
ratio - 1). Output: a table on stdout and `--json`.

`--median-steps N` (the method for a shared, noisy machine) instead runs each variant with N steps, `--repeats`
times, plain and controlled alternating, and takes the median of the intervals between the sampler's
consecutive `progress` messages (every step after the first: N - 1 per run); a load spike then spoils a few
intervals, not the whole estimate.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _servers import Server, ServerSpec, find_peer_python, node_durations, server_env, write_model_paths

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fidelity import ensure_model  # noqa: E402
from fidelity_cases import controlnet as cases  # noqa: E402
from fidelity_cases.graph import Graph, test_image_png  # noqa: E402


def graph(size: int, steps: int, with_control: bool) -> dict:
    g = Graph()
    ckpt, model, pos, neg = cases.sample_nodes(g)
    if with_control:
        hint = g.add("LoadImage", image=cases.HINT)
        net = g.add("ControlNetLoader", control_net_name=cases.CONTROLNET)
        applied = g.add("ControlNetApplyAdvanced", positive=pos, negative=neg, control_net=net[0], image=hint[0],
                        strength=1.0, start_percent=0.0, end_percent=1.0)
        pos, neg = applied[0], applied[1]
    latent = g.add("EmptyLatentImage", width=size, height=size, batch_size=1)
    sampler = cases.ksampler(g, model, pos, neg, latent[0], steps=steps)
    g.add("PreviewImage", images=g.add("VAEDecode", samples=sampler[0], vae=ckpt[2])[0])
    return g.prompt(), sampler.node_id


def sampler_seconds(server: Server, size: int, steps: int, with_control: bool, timeout_s: float) -> float:
    return sampler_run(server, size, steps, with_control, timeout_s)[0]


def sampler_run(server: Server, size: int, steps: int, with_control: bool, timeout_s: float) -> tuple[float, list[float]]:
    """(the KSampler node's seconds, the intervals between its consecutive progress messages)."""
    prompt, sampler_id = graph(size, steps, with_control)
    done = server.submit(prompt, timeout_s)
    marks = [(t, int(m["data"]["value"])) for t, m in done.events if m.get("type") == "progress"
             and str(m.get("data", {}).get("node")) == str(sampler_id)]
    intervals = [b[0] - a[0] for a, b in zip(marks, marks[1:]) if b[1] == a[1] + 1]
    return node_durations(done.events)[sampler_id], intervals


def measure(spec: ServerSpec, work: Path, model_paths: Path, env: dict, args) -> dict:
    server = Server(spec, work, model_paths, env, work / f"{spec.label}.log", port=args.port)
    input_dir = server.base / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    (input_dir / cases.HINT).write_bytes(test_image_png(64))
    low, high = args.steps
    try:
        server.start(args.start_timeout_s)
        sampler_seconds(server, args.size, 1, True, args.prompt_timeout_s)              # warm-up, both models loaded
        out = {}
        if args.median_steps:
            samples: dict[str, list[float]] = {"plain": [], "controlnet": []}
            for _ in range(args.repeats):
                for name, with_control in (("plain", False), ("controlnet", True)):
                    seconds, intervals = sampler_run(server, args.size, args.median_steps, with_control,
                                                     args.prompt_timeout_s)
                    samples[name] += intervals
                    out.setdefault(f"{name}_sampler_s", []).append(seconds)
            for name, values in samples.items():
                out[f"{name}_s_per_step"] = statistics.median(values)
                out[f"{name}_step_intervals"] = [round(v, 3) for v in values]
            out["ratio"] = out["controlnet_s_per_step"] / out["plain_s_per_step"]
            print(f"[{spec.label}] {json.dumps(out)}", flush=True)
            return out
        for name, with_control in (("plain", False), ("controlnet", True)):
            times = [sampler_seconds(server, args.size, n, with_control, args.prompt_timeout_s) for n in (low, high)]
            out[f"{name}_s_per_step"] = (times[1] - times[0]) / (high - low)
            out[f"{name}_sampler_s"] = times
        out["ratio"] = out["controlnet_s_per_step"] / out["plain_s_per_step"]
        print(f"[{spec.label}] {json.dumps(out)}", flush=True)
        return out
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-dir", type=Path, required=True)
    parser.add_argument("--peer-python", type=Path)
    parser.add_argument("--plexus-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, nargs=2, default=[2, 4], metavar=("LOW", "HIGH"))
    parser.add_argument("--median-steps", type=int, help="the median-of-step-intervals method with this many steps")
    parser.add_argument("--repeats", type=int, default=2, help="--median-steps: runs per variant, alternating")
    parser.add_argument("--only", choices=("plexus", "peer"))
    parser.add_argument("--no-fp32", action="store_true")
    parser.add_argument("--port-base", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--prompt-timeout-s", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models_dir = args.models_dir.resolve()
    for model in cases.FAMILY.models[:2]:                     # the checkpoint and the original-layout ControlNet
        ensure_model(models_dir, model)
    extra = [] if args.no_fp32 else ["--force-fp32"]
    env = server_env(args.threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sides = {"plexus": ServerSpec("plexus", args.plexus_python, ROOT, extra)}
    peer_dir = args.peer_dir.resolve()
    sides["comfyui"] = ServerSpec("comfyui", (args.peer_python or find_peer_python(peer_dir)).absolute(), peer_dir,
                                  extra)
    if args.only:
        sides = {k: v for k, v in sides.items() if (k == "plexus") == (args.only == "plexus")}
    results = {}
    with tempfile.TemporaryDirectory(prefix="plexus-cn-cost-") as tmp:
        work = Path(tmp)
        model_paths = write_model_paths(work, models_dir, ("checkpoints", "controlnet"))
        for i, (label, spec) in enumerate(sides.items()):
            args.port = args.port_base + i if args.port_base else None
            results[label] = measure(spec, work, model_paths, env, args)
    method = (f"median of {args.repeats} x {args.median_steps - 1} step intervals" if args.median_steps
              else f"steps {args.steps}")
    print(f"\n| server | plain s/step | ControlNet s/step | ratio | (size {args.size}, {method}) |")
    print("|---|---:|---:|---:|---|")
    for label, r in results.items():
        print(f"| {label} | {r['plain_s_per_step']:.2f} | {r['controlnet_s_per_step']:.2f} | {r['ratio']:.3f} | |")
    out = args.json or ROOT / "bench" / "results" / f"controlnet-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
