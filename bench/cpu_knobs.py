"""A/B measurements of CPU knobs on one full-size SD1.5 UNet forward (batch 2), and of the attention op alone.

    .venv/bin/python bench/cpu_knobs.py                          # every knob, fp32 + bf16, 32x32, 3 rounds
    .venv/bin/python bench/cpu_knobs.py --knobs threads flush_denormal --dtypes bf16 --rounds 5
    .venv/bin/python bench/cpu_knobs.py --only attention --attention-sizes 32 64
    .venv/bin/python bench/cpu_knobs.py --only trace             # which oneDNN kernels a forward runs

Knobs (A is what Plexus does today, B the alternative):
- `threads`: torch.set_num_threads(os.cpu_count()) vs 1;
- `flush_denormal`: torch.set_flush_denormal(False) vs True (only matters where denormals occur; random
  weights may have none, real checkpoints and late sampling steps can);
- `channels_last`: the model and input contiguous vs channels-last;
- `mkldnn`: torch.backends.mkldnn.enabled True vs False (conv, and bf16 linear / matmul, leave oneDNN);
- `fp32_precision` (fp32 only): torch.backends.mkldnn.{matmul,conv}.fp32_precision "none" vs "bf16";
- `fpmath_env` (fp32 only): ONEDNN_DEFAULT_FPMATH_MODE unset vs BF16, one subprocess per side (oneDNN reads
  it once at start-up). This and `fp32_precision` silently compute fp32 ops in bf16: `rel_diff` shows it,
  and neither may be used under --force-fp32;
- `omp_passive`: OMP_WAIT_POLICY unset vs PASSIVE (idle OpenMP threads sleep instead of spinning; matters
  when other processes want the cores), one subprocess per side.
Sides run interleaved (A B A B ...; bench/_unet_fixture.time_interleaved), after one discarded warm-up
forward each; medians are reported. When one side is over 10x slower after the first round, the knob stops
there (`stopped_early`). `rel_diff` is ||out_B - out_A|| / ||out_A|| on the same input: a knob that only
reorders sums shows ~1e-6 in fp32 and up to ~2e-2 in bf16 (another kernel, another rounding, through the
whole random-weight UNet); a knob that lowers fp32 to bf16 would show ~1e-2 in fp32.

`attention`: the attention op alone at the UNet's shapes (SD1.5: 8 heads; 40-dim heads at latent size s with
s*s tokens, 80 at (s/2)^2, 160 at (s/4)^2 and (s/8)^2; self-attention and cross-attention over 77 tokens),
q/k/v laid out as the model makes them (views of [B, N, h*d]): sdpa as dispatched (the kernel it picks is
named), sdpa forced to its math path, a manual softmax(q k^T / sqrt(d)) v in the same dtype, and Plexus's
sliced and sub-quadratic backends. `per_forward_s` weights each shape by its calls per UNet forward.

`trace`: one forward (latent `--trace-size`) with oneDNN's verbose log on, summed per primitive kind,
implementation, source dtype and fpmath attribute (what runs through oneDNN, and in which ISA), plus the
profiler's top aten ops by self time.
Results: tables on stdout and bench/results/cpu_knobs.json. Numbers from a shared 2-core machine are rough.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _unet_fixture import (
    DTYPES,
    RESULTS,
    ROOT,
    Side,
    build_plexus,
    environment,
    random_sd15_unet_state,
    set_memory_format,
    time_interleaved,
    unet_inputs,
    write_report,
)
from torch.nn.attention import SDPBackend, sdpa_kernel

from models.attention import attention_sliced, attention_sub_quadratic

# knobs set through the environment, one child process per side: name -> (variable, B's value)
ENV_KNOBS = {"fpmath_env": ("ONEDNN_DEFAULT_FPMATH_MODE", "BF16"),
             "omp_passive": ("OMP_WAIT_POLICY", "PASSIVE")}
KNOBS = ("threads", "flush_denormal", "channels_last", "mkldnn", "fp32_precision", *ENV_KNOBS)
FP32_ONLY = ("fp32_precision", "fpmath_env")
EARLY_STOP_RATIO = 10.0         # a side this much slower after one round is not worth more rounds
NOISE = 0.05                     # differences under 5% are called noise on this shared machine

warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


# --- the UNet under test ---------------------------------------------------------------------------------

@dataclass
class UNetBench:
    """One model and its inputs in both layouts; `is_channels_last` is the layout of every knob but
    channels_last."""

    model: torch.nn.Module
    dtype_name: str
    size: int
    is_channels_last: bool

    def __post_init__(self) -> None:
        dtype = DTYPES[self.dtype_name]
        self.inputs = {is_cl: unet_inputs(self.size, dtype, is_cl) for is_cl in (False, True)}
        set_memory_format(self.model, self.is_channels_last)

    def forward(self, is_channels_last: bool | None = None) -> torch.Tensor:
        is_cl = self.is_channels_last if is_channels_last is None else is_channels_last
        x, t, context = self.inputs[is_cl]
        return self.model(x, t, context)


def switch(setter: Callable[[object], None], getter: Callable[[], object],
           value: object) -> tuple[Callable, Callable]:
    """(enter, leave) that set a global to `value` and put the old value back."""
    saved: list[object] = []

    def enter() -> None:
        saved.append(getter())
        setter(value)

    def leave() -> None:
        setter(saved.pop())
    return enter, leave


def setting_side(bench: UNetBench, setter, getter, value) -> Side:
    enter, leave = switch(setter, getter, value)
    return Side(run=bench.forward, enter=enter, leave=leave)


def set_mkldnn_fp32_precision(value: str) -> None:
    torch.backends.mkldnn.matmul.fp32_precision = value
    torch.backends.mkldnn.conv.fp32_precision = value


def in_process_sides(knob: str, bench: UNetBench) -> dict[str, Side]:
    """The two sides of an in-process knob, A (today's behaviour) first."""
    if knob == "threads":
        n = os.cpu_count() or 1
        return {f"{n} threads": setting_side(bench, torch.set_num_threads, torch.get_num_threads, n),
                "1 thread": setting_side(bench, torch.set_num_threads, torch.get_num_threads, 1)}
    if knob == "flush_denormal":
        # there is no getter; False is torch's default and what Plexus runs with
        return {"flush off": setting_side(bench, torch.set_flush_denormal, lambda: False, False),
                "flush on": setting_side(bench, torch.set_flush_denormal, lambda: False, True)}
    if knob == "channels_last":
        def layout(is_cl: bool) -> Side:
            return Side(run=lambda: bench.forward(is_cl),
                        enter=lambda: set_memory_format(bench.model, is_cl),
                        leave=lambda: set_memory_format(bench.model, bench.is_channels_last))
        return {"contiguous": layout(False), "channels-last": layout(True)}
    if knob == "mkldnn":
        def set_enabled(value):
            torch.backends.mkldnn.enabled = value
        get_enabled = lambda: torch.backends.mkldnn.enabled
        return {"mkldnn on": setting_side(bench, set_enabled, get_enabled, True),
                "mkldnn off": setting_side(bench, set_enabled, get_enabled, False)}
    if knob == "fp32_precision":
        get = lambda: torch.backends.mkldnn.matmul.fp32_precision
        return {"fp32_precision none": setting_side(bench, set_mkldnn_fp32_precision, get, "none"),
                "fp32_precision bf16": setting_side(bench, set_mkldnn_fp32_precision, get, "bf16")}
    raise ValueError(f"unknown knob {knob!r}; choose from {KNOBS}")


def recording(side: Side, outputs: dict[str, torch.Tensor], name: str) -> Side:
    """The same side, keeping its latest output for the numerics check."""
    def run():
        outputs[name] = side.run()
    return Side(run=run, enter=side.enter, leave=side.leave)


def compare(sides: dict[str, Side], rounds: int,
            outputs: Callable[[], dict[str, torch.Tensor]] | None = None) -> dict:
    """Interleaved A/B, stopped early when one side is clearly slower; medians and relative output diff."""
    first = time_interleaved(sides, 1, warmup=1)
    times = {name: list(r.times_s) for name, r in first.items()}
    ratio = max(t[0] for t in times.values()) / min(t[0] for t in times.values())
    is_stopped = ratio > EARLY_STOP_RATIO
    if rounds > 1 and not is_stopped:
        for name, r in time_interleaved(sides, rounds - 1, warmup=0).items():
            times[name] += r.times_s
    (a_name, a_times), (b_name, b_times) = times.items()
    a_s, b_s = statistics.median(a_times), statistics.median(b_times)
    result = {"a": a_name, "b": b_name, "a_median_s": round(a_s, 4), "b_median_s": round(b_s, 4),
              "b_speedup": round(a_s / b_s, 3), "a_times_s": [round(t, 4) for t in a_times],
              "b_times_s": [round(t, 4) for t in b_times], "stopped_early": is_stopped}
    if outputs is not None:
        out = outputs()
        a, b = out[a_name].double(), out[b_name].double()
        result["rel_diff"] = float((b - a).norm() / a.norm())
    result["verdict"] = verdict(result["b_speedup"], a_name, b_name)
    return result


def verdict(b_speedup: float, a_name: str, b_name: str) -> str:
    if b_speedup > 1 + NOISE:
        return f"{b_name} pays (x{b_speedup:.2f})"
    if b_speedup < 1 - NOISE:
        return f"{b_name} loses (x{b_speedup:.2f}); keep {a_name}"
    return f"no difference beyond noise (x{b_speedup:.2f})"


# --- environment-variable knobs: one subprocess per side --------------------------------------------------

class ChildUNet:
    """A subprocess holding its own UNet, driven over stdin/stdout: `run`, `save PATH`, `trace`, `quit`."""

    def __init__(self, env_overrides: dict[str, str | None], dtype_name: str, size: int,
                 is_channels_last: bool):
        env = dict(os.environ)
        for k, v in env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.stderr = tempfile.TemporaryFile(mode="w+")          # noqa: SIM115 (open for the child's life)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", dtype_name, str(size), "on" if is_channels_last else "off"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=ROOT)

    def _reply(self, prefix: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.stderr.seek(0)
                raise RuntimeError(f"child UNet exited ({self.proc.wait()}):\n{self.stderr.read()[-3000:]}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def command(self, text: str, reply_prefix: str) -> str:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._reply(reply_prefix)

    def wait_ready(self) -> None:
        self._reply("READY")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def child_main(dtype_name: str, size: int, is_channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_plexus(random_sd15_unet_state(), DTYPES[dtype_name])
    bench = UNetBench(model, dtype_name, size, is_channels_last)
    last: torch.Tensor | None = None
    print("READY", flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "run":
                started = time.perf_counter()
                last = bench.forward()
                print(f"DONE {time.perf_counter() - started}", flush=True)
            elif command == "save":
                torch.save(last, arg)
                print("SAVED", flush=True)
            elif command == "trace":
                print("TRACE " + json.dumps(trace_forward(bench)), flush=True)
            elif command == "quit":
                return


def env_compare(knob: str, dtype_name: str, size: int, is_channels_last: bool, rounds: int,
                is_traced: bool) -> dict:
    """A/B of an environment-variable knob: the variable unset (A) vs set (B), each side its own process."""
    variable, value = ENV_KNOBS[knob]
    children = {name: ChildUNet({variable: setting}, dtype_name, size, is_channels_last)
                for name, setting in ((f"{variable} unset", None), (f"{variable}={value}", value))}
    try:
        for child in children.values():
            child.wait_ready()
        sides = {name: Side(run=lambda c=child: c.command("run", "DONE "))
                 for name, child in children.items()}
        tmp = Path(tempfile.mkdtemp(prefix="plexus-knobs-"))

        def outputs() -> dict[str, torch.Tensor]:
            found = {}
            for i, (name, child) in enumerate(children.items()):
                child.command(f"save {tmp / f'{i}.pt'}", "SAVED")
                found[name] = torch.load(tmp / f"{i}.pt")
                (tmp / f"{i}.pt").unlink()
            return found
        result = compare(sides, rounds, outputs)
        tmp.rmdir()
        if is_traced:
            result["trace"] = {name: json.loads(child.command("trace", "TRACE "))
                               for name, child in children.items()}
        return result
    finally:
        for child in children.values():
            child.close()


# --- which kernels run: oneDNN verbose log and profiler --------------------------------------------------

@contextlib.contextmanager
def captured_stdout_fd(path: Path):
    """Redirect file descriptor 1 (where oneDNN's C code writes its verbose log) into `path`."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def summarise_onednn_log(text: str) -> list[dict]:
    """Sum oneDNN `exec` lines per (primitive kind, implementation, source dtype, fpmath attribute)."""
    groups: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0])
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 10 or fields[2] != "primitive" or fields[3] != "exec":
            continue
        src = next((m.split(":")[1] for m in fields[8].split() if m.startswith("src:")), "?")
        fpmath = next((a.split(":")[1] for a in fields[9].split() if a.startswith("attr-fpmath:")), "")
        key = (fields[5], fields[6], src, fpmath)
        groups[key][0] += 1
        groups[key][1] += float(fields[-1])
    return [{"kind": k[0], "impl": k[1], "src": k[2], "fpmath": k[3], "calls": v[0], "ms": round(v[1], 1)}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1][1])]


def trace_forward(bench: UNetBench, top_ops: int = 10) -> dict:
    """oneDNN primitives and the top aten ops (self CPU time) of one forward, after a warm-up forward."""
    with torch.inference_mode():
        bench.forward()
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "onednn.log"
            with captured_stdout_fd(log), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                bench.forward()
            primitives = summarise_onednn_log(log.read_text())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            bench.forward()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top_ops]
    return {"onednn": primitives,
            "aten_top": [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 1)}
                         for e in ops]}


def print_trace(title: str, trace: dict) -> None:
    print(f"\n{title}: oneDNN primitives (verbose log; its timings include logging overhead)")
    for p in trace["onednn"]:
        print(f"  {p['kind']:12} {p['impl']:32} src {p['src']:5} fpmath {p['fpmath'] or '-':5} "
              f"{p['calls']:5} calls {p['ms']:9.1f} ms")
    print("  top aten ops by self time: " + ", ".join(f"{o['op']} {o['self_ms']:.0f} ms ({o['calls']})"
                                                      for o in trace["aten_top"]))


# --- the attention op alone ------------------------------------------------------------------------------

HEADS = 8


def attention_shapes(size: int) -> list[dict]:
    """SD1.5's attention calls per forward at latent `size`: (tokens, head dim, key tokens, calls)."""
    shapes = []
    for level, (side, head_dim, calls) in enumerate([(size, 40, 5), (size // 2, 80, 5), (size // 4, 160, 5),
                                                     (size // 8, 160, 1)]):
        name = f"L{level}" if level < 3 else "mid"
        for kind, keys in (("self", side * side), ("cross", 77)):
            shapes.append({"name": f"{name} {kind}", "tokens": side * side, "head_dim": head_dim,
                           "keys": keys, "calls": calls})
    return shapes


def model_layout_qkv(batch: int, tokens: int, keys: int, head_dim: int, dtype: torch.dtype):
    """q [B, h, N, d], k/v [B, h, M, d] as views of [B, N, h*d] projections, as models/unet.py makes them."""
    g = torch.Generator().manual_seed(0)

    def make(n: int) -> torch.Tensor:
        flat = torch.randn(batch, n, HEADS * head_dim, generator=g).to(dtype)           # [B, n, h*d]
        return flat.view(batch, n, HEADS, head_dim).transpose(1, 2)                     # [B, h, n, d]
    return make(tokens), make(keys), make(keys)


def attention_manual(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1), unfused, in the inputs' dtype."""
    return torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1])), dim=-1) @ v


def forced_math_side(q, k, v) -> Side:
    stack: list = []

    def enter() -> None:
        stack.append(sdpa_kernel(SDPBackend.MATH))
        stack[-1].__enter__()
    return Side(run=lambda: F.scaled_dot_product_attention(q, k, v), enter=enter,
                leave=lambda: stack.pop().__exit__(None, None, None))


def attention_sides(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, picked: str) -> dict[str, Side]:
    return {f"sdpa ({picked.lower()})": Side(run=lambda: F.scaled_dot_product_attention(q, k, v)),
            "sdpa math": forced_math_side(q, k, v),
            "manual": Side(run=lambda: attention_manual(q, k, v)),
            "sliced": Side(run=lambda: attention_sliced(q, k, v)),
            "sub_quadratic": Side(run=lambda: attention_sub_quadratic(q, k, v))}


def attention_compare(sizes: list[int], dtype_names: list[str], rounds: int) -> list[dict]:
    rows = []
    for size in sizes:
        for dtype_name in dtype_names:
            per_forward: dict[str, float] = defaultdict(float)
            for shape in attention_shapes(size):
                dtype = DTYPES[dtype_name]
                q, k, v = model_layout_qkv(2, shape["tokens"], shape["keys"], shape["head_dim"], dtype)
                picked = SDPBackend(torch._fused_sdp_choice(q, k, v)).name
                sides = attention_sides(q, k, v, picked)
                measured = time_interleaved(sides, rounds, warmup=1)
                row = dict(size=size, dtype=dtype_name, **shape, sdpa_picks=picked,
                           median_s={name: round(r.median_s, 5) for name, r in measured.items()})
                rows.append(row)
                for name, r in measured.items():
                    per_forward[name.split(" (")[0]] += r.median_s * shape["calls"]
                cells = "  ".join(f"{name} {s * 1000:8.2f}" for name, s in row["median_s"].items())
                print(f"  {dtype_name} latent {size:2} {shape['name']:9} [{2 * HEADS}, {shape['tokens']:4}x"
                      f"{shape['keys']:4}, {shape['head_dim']:3}] ms: {cells}", flush=True)
            rows.append({"size": size, "dtype": dtype_name, "name": "per forward (weighted by calls)",
                             "per_forward_s": {k: round(v, 4) for k, v in per_forward.items()}})
            print(f"  {dtype_name} latent {size:2} attention per UNet forward: "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in per_forward.items()), flush=True)
    return rows


# --- driver ----------------------------------------------------------------------------------------------

def run_knobs(args) -> list[dict]:
    rows = []
    is_cl = args.channels_last == "on"
    state = random_sd15_unet_state()
    for dtype_name in args.dtypes:
        in_process = [k for k in args.knobs
                      if k not in ENV_KNOBS and (dtype_name == "fp32" or k not in FP32_ONLY)]
        if not in_process:
            continue
        bench = UNetBench(build_plexus(state, DTYPES[dtype_name]), dtype_name, args.size, is_cl)
        for knob in in_process:
            outputs: dict[str, torch.Tensor] = {}
            sides = {name: recording(side, outputs, name)
                     for name, side in in_process_sides(knob, bench).items()}
            rows.append(report_knob(knob, dtype_name, compare(sides, args.rounds, lambda o=outputs: o)))
        del bench
    del state                                                      # the env knobs' children build their own
    for knob in (k for k in args.knobs if k in ENV_KNOBS):
        for dtype_name in (d for d in args.dtypes if d == "fp32" or knob not in FP32_ONLY):
            result = env_compare(knob, dtype_name, args.size, is_cl, args.rounds, args.trace_env)
            rows.append(report_knob(knob, dtype_name, result))
            for name, trace in result.get("trace", {}).items():
                print_trace(f"{dtype_name} forward, {name}", trace)
    return rows


def report_knob(knob: str, dtype_name: str, result: dict) -> dict:
    row = dict(knob=knob, dtype=dtype_name, **result)
    diff = f"  rel_diff {row['rel_diff']:.1e}" if "rel_diff" in row else ""
    stop = " (stopped after 1 round)" if row["stopped_early"] else ""
    print(f"{knob:15} {dtype_name:4} {row['a']:>20} {row['a_median_s']:7.3f} s | {row['b']:<20} "
          f"{row['b_median_s']:7.3f} s{diff}  -> {row['verdict']}{stop}", flush=True)
    return row


def run_traces(args) -> list[dict]:
    traces = []
    state = random_sd15_unet_state()
    for dtype_name in args.dtypes:
        bench = UNetBench(build_plexus(state, DTYPES[dtype_name]), dtype_name, args.trace_size, False)
        for is_cl in (False, True):
            set_memory_format(bench.model, is_cl)
            bench.is_channels_last = is_cl
            trace = trace_forward(bench)
            title = f"{dtype_name} {'channels-last' if is_cl else 'contiguous'} latent {args.trace_size}"
            print_trace(title, trace)
            traces.append(dict(dtype=dtype_name, channels_last=is_cl, size=args.trace_size, **trace))
        if dtype_name == "fp32":
            bench.is_channels_last = False
            set_memory_format(bench.model, False)
            set_mkldnn_fp32_precision("bf16")
            try:
                trace = trace_forward(bench)
            finally:
                set_mkldnn_fp32_precision("none")
            print_trace(f"fp32 contiguous latent {args.trace_size}, mkldnn fp32_precision=bf16", trace)
            traces.append(dict(dtype=dtype_name, channels_last=False, size=args.trace_size,
                               fp32_precision="bf16", **trace))
        del bench
    return traces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=["knobs", "attention", "trace"],
                   default=["knobs", "attention"])
    p.add_argument("--knobs", nargs="+", choices=KNOBS, default=list(KNOBS))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--size", type=int, default=32, help="latent size of the UNet forward")
    p.add_argument("--channels-last", choices=["on", "off"], default="off",
                   help="layout for the knobs other than channels_last (Plexus runs contiguous today)")
    p.add_argument("--rounds", type=int, default=3, help="timed A/B rounds per knob")
    p.add_argument("--attention-sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--attention-rounds", type=int, default=5)
    p.add_argument("--trace-size", type=int, default=16, help="latent size of the traced forward")
    p.add_argument("--trace-env", action="store_true", help="also trace the env knobs' children's forwards")
    p.add_argument("--json", type=Path, default=RESULTS / "cpu_knobs.json")
    p.add_argument("--child", nargs=3, metavar=("DTYPE", "SIZE", "CHANNELS_LAST"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        return child_main(args.child[0], int(args.child[1]), args.child[2] == "on")
    torch.manual_seed(0)
    env = environment()
    print(f"torch {env['torch']}, {env['threads']} threads, CPU capability {env['cpu_capability']}, "
          f"load average {env['load_average'][0]:.2f}", flush=True)
    report: dict = {"environment": env,
                    "args": {k: v for k, v in vars(args).items() if k not in ("json", "child")}}
    if "knobs" in args.only:
        print(f"\nUNet forward, batch 2, latent {args.size}x{args.size}, "
              f"medians of {args.rounds} interleaved rounds:")
        report["knobs"] = run_knobs(args)
    if "attention" in args.only:
        print(f"\nattention op alone, medians of {args.attention_rounds} interleaved rounds:")
        report["attention"] = attention_compare(args.attention_sizes, args.dtypes, args.attention_rounds)
    if "trace" in args.only:
        report["trace"] = run_traces(args)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
