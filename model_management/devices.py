"""Compute devices, their memory, and what arithmetic they do fast.

Everything here is a function called on demand: importing this module probes nothing. The
functions take a `torch.device` and never a global "current device"; the registry holds the one it
computes on.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from model_management.settings import MemorySettings

MIB = 1024 ** 2


@dataclass(frozen=True)
class DeviceMemory:
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class DeviceCaps:
    """What the dtype policy needs to know about a device."""

    type: str                    # "cuda" | "mps" | "xpu" | "cpu"
    name: str
    has_fast_fp16: bool
    has_bf16: bool
    bf16_reason: str = ""        # e.g. "cpu flags avx512_bf16, amx_bf16"


# --- discovery ---------------------------------------------------------------------------------

def available_devices() -> list[torch.device]:
    """Every accelerator torch can use here, then the CPU. Called lazily, never at import."""
    found: list[torch.device] = []
    if torch.cuda.is_available():
        found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [torch.device("xpu", i) for i in range(xpu.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(torch.device("mps"))
    found.append(torch.device("cpu"))
    return found


def pick_compute_device(settings: MemorySettings) -> torch.device:
    """The device from `--cpu` / an explicit device, else the first accelerator, else the CPU."""
    if settings.is_cpu_only:
        return torch.device("cpu")
    if settings.device:
        device = torch.device(settings.device)
        if device.type in ("cuda", "xpu") and device.index is None:
            device = torch.device(device.type, 0)
        return device
    return available_devices()[0]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{_index(device)} {torch.cuda.get_device_name(_index(device))}"
    if device.type == "xpu":
        return f"xpu:{_index(device)} {torch.xpu.get_device_name(_index(device))}"
    if device.type == "mps":
        return "mps (Apple GPU, unified memory)"
    return f"cpu {platform.processor() or platform.machine()}"


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


# --- memory ------------------------------------------------------------------------------------

def device_memory(device: torch.device) -> DeviceMemory:
    """Total and currently free memory of a device as the driver sees it (RAM for the CPU)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(_index(device))
        # blocks torch's caching allocator holds but no tensor uses are free for us too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return DeviceMemory(total, free + cached)
    if device.type == "xpu":
        xpu = torch.xpu
        if hasattr(xpu, "mem_get_info"):
            free, total = xpu.mem_get_info(_index(device))
            return DeviceMemory(total, free)
        total = xpu.get_device_properties(_index(device)).total_memory
        return DeviceMemory(total, total - xpu.memory_reserved(_index(device)))
    if device.type == "mps":
        total = int(torch.mps.recommended_max_memory())
        return DeviceMemory(total, max(0, total - int(torch.mps.driver_allocated_memory())))
    return ram_memory()


def ram_memory() -> DeviceMemory:
    vm = psutil.virtual_memory()
    return DeviceMemory(vm.total, vm.available)


def allocator_bytes(device: torch.device) -> tuple[int, int]:
    """(bytes the torch allocator holds, of which free for reuse): ComfyUI's torch_vram_total/free."""
    if device.type == "cuda":
        reserved = torch.cuda.memory_reserved(device)
        return reserved, reserved - torch.cuda.memory_allocated(device)
    return 0, 0


def default_reserve_bytes(device: torch.device) -> int:
    """VRAM left to the desktop and other programs when `--reserve-vram` is not given.

    Our own choice: 512 MiB, 1 GiB on Windows where the compositor lives in VRAM; none on the CPU
    (the RAM budget governs that)."""
    if device.type == "cpu":
        return 0
    return 1024 * MIB if platform.system() == "Windows" else 512 * MIB


def empty_cache(device: torch.device) -> None:
    """Give cached allocator blocks back to the driver (after an unload or an OOM)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "xpu":
        torch.xpu.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --- arithmetic capabilities -------------------------------------------------------------------

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_native_bf16_flags(flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """Which of avx512_bf16 / amx_bf16 the CPU has: bf16 matmuls in hardware (oneDNN uses them)."""
    flags = cpu_flags() if flags is None else flags
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def device_caps(device: torch.device, *, cpu_flag_set: frozenset[str] | None = None) -> DeviceCaps:
    name = describe_device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(_index(device))
        # fp16 tensor cores from Volta (7.0); Pascal consumer cards (6.1) run fp16 at 1/64 rate.
        # bf16 needs Ampere (8.0) for speed; torch reports emulated support on older cards.
        is_bf16 = major >= 8
        return DeviceCaps("cuda", name, (major, minor) >= (7, 0) or (major, minor) == (6, 0), is_bf16,
                          f"compute capability {major}.{minor}")
    if device.type == "xpu":
        return DeviceCaps("xpu", name, True, True, "Intel XPU")
    if device.type == "mps":
        return DeviceCaps("mps", name, True, _mps_has_bf16(), "Apple GPU")
    found = cpu_native_bf16_flags(cpu_flag_set)
    return DeviceCaps("cpu", name, False, bool(found),
                      f"cpu flags {', '.join(found)}" if found else "no avx512_bf16/amx_bf16 cpu flag")


def _mps_has_bf16() -> bool:
    try:  # bf16 on MPS needs macOS 14; torch raises where it is missing
        torch.ones(1, dtype=torch.bfloat16, device="mps")
        return True
    except (RuntimeError, TypeError):
        return False
