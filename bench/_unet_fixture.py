"""What bench/unet.py and bench/cpu_knobs.py share: the full-size SD1.5 UNet with random weights, its inputs,
interleaved timing and per-forward peak RSS.

- `random_sd15_unet_state` / `build_plexus`: the UNet in the LDM file layout, built on the meta device and
  filled by assignment (fp32 shares the state's storage; bf16 is stored as bf16, not autocast).
- `unet_inputs(size, dtype, is_channels_last)`: the batch-2 (classifier-free-guidance pair) inputs
  x [2, 4, size, size], t [2], context [2, 77, 768].
- `time_interleaved(sides, rounds, warmup)`: runs each side `warmup` times (discarded), then one forward of
  every side per round (A B C A B C ...), so that load from other processes on the shared machine falls on
  all sides alike; returns every side's times.
- `PeakRss`: peak resident set size of one call, as VmHWM after resetting it (`/proc/self/clear_refs` "5")
  minus VmRSS before, so each configuration gets its own peak rather than the process's all-time maximum.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.attention import DEFAULT_ATTENTION
from models.testing import module_layout, random_tensor, sd15_unet_config
from models.unet import UNetModel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ENVIRONMENT_KNOBS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "ONEDNN_DEFAULT_FPMATH_MODE", "LD_PRELOAD")


def random_sd15_unet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-size SD1.5 UNet weights (fp32) in the LDM file layout (keys without `model.diffusion_model.`)."""
    shapes = module_layout(UNetModel, sd15_unet_config(), "")
    return {k: random_tensor(k, s, torch.float32, seed) for k, s in shapes.items()}


def build_plexus(state: Mapping[str, torch.Tensor], dtype: torch.dtype, backend: str = DEFAULT_ATTENTION) -> UNetModel:
    with torch.device("meta"):
        model = UNetModel(sd15_unet_config(), attention=backend)
    # copies: a model that shares weight storage with another is never prepacked (models/prepack.py)
    model.load_state_dict({k: v.to(dtype, copy=True) for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)


def set_memory_format(model: torch.nn.Module, is_channels_last: bool) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last if is_channels_last else torch.contiguous_format)


def unet_inputs(size: int, dtype: torch.dtype,
                is_channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size, size, generator=g).to(dtype)                 # [2, 4, h, w]
    if is_channels_last:
        x = x.to(memory_format=torch.channels_last)
    context = torch.randn(2, 77, 768, generator=g).to(dtype)                 # [2, 77, 768]
    return x, torch.tensor([999.0, 999.0]), context


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def peak_rss_mib() -> float:
    """The process's peak RSS so far (VmHWM; since the last `PeakRss` reset, if any)."""
    return _status_kib("VmHWM") / 1024


class PeakRss:
    """`with PeakRss() as p: ...` then `p.delta_mib` (peak during the block above RSS at its start) and
    `p.peak_mib`. Where the kernel refuses the reset, `is_exact` is False and the peak is the all-time one."""

    def __init__(self) -> None:
        self.is_exact = True
        self.start_mib = self.peak_mib = 0.0

    def __enter__(self) -> Self:
        try:
            Path("/proc/self/clear_refs").write_text("5")               # resets VmHWM to the current RSS
        except OSError:
            self.is_exact = False
        self.start_mib = _status_kib("VmRSS") / 1024
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mib = peak_rss_mib()

    @property
    def delta_mib(self) -> float:
        return self.peak_mib - self.start_mib


@dataclass
class SideTimes:
    """The measured forwards of one side of an interleaved comparison."""

    times_s: list[float] = field(default_factory=list)
    peak_delta_mib: float = 0.0                   # the largest peak of one call above RSS before it
    peak_mib: float = 0.0                         # the largest absolute peak RSS of one call

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


@dataclass
class Side:
    """One configuration: `enter()` switches to it (untimed), `run()` is the timed call, `leave()` undoes."""

    run: Callable[[], object]
    enter: Callable[[], None] = lambda: None
    leave: Callable[[], None] = lambda: None


def time_interleaved(sides: Mapping[str, Side], rounds: int, warmup: int = 1,
                     on_time: Callable[[str, float], None] | None = None) -> dict[str, SideTimes]:
    """`warmup` discarded calls per side, then `rounds` rounds of one timed call per side, in order."""
    results = {name: SideTimes() for name in sides}
    with torch.inference_mode():
        for name, side in sides.items():
            side.enter()
            try:
                for _ in range(warmup):
                    side.run()
            finally:
                side.leave()
        for _ in range(rounds):
            for name, side in sides.items():
                side.enter()
                try:
                    with PeakRss() as rss:
                        started = time.perf_counter()
                        side.run()
                        elapsed = time.perf_counter() - started
                finally:
                    side.leave()
                results[name].times_s.append(elapsed)
                results[name].peak_delta_mib = max(results[name].peak_delta_mib, rss.delta_mib)
                results[name].peak_mib = max(results[name].peak_mib, rss.peak_mib)
                if on_time:
                    on_time(name, elapsed)
    return results


def environment() -> dict:
    """What the numbers depend on: torch build, threads, CPU, and how busy the machine was."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average": os.getloadavg(),
            "env": {k: os.environ[k] for k in ENVIRONMENT_KNOBS if k in os.environ}}


def write_report(path: Path, report: dict) -> None:
    """Stamp the load average after the run and write `report` as JSON to `path`."""
    import json
    report["load_average_after"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {path}")
