"""What the user asked for at start-up about memory and precision, as one plain value.

`main.py` fills a :class:`MemorySettings` from the command-line flags (`--cpu`, `--highvram`,
`--normalvram`, `--lowvram`, `--novram`, `--reserve-vram GB`, `--vram-budget GB`, `--ram-budget GB`,
`--force-fp32`, `--force-fp16`, `--bf16-unet`, `--fp32-vae`, `--int8-unet`, `--compile-unet`, `--compile-blocking`,
`--compile-cache-dir`, `--attention`, `--disable-weight-prepack`). Nothing here parses argv or looks
at a device: the settings are data, and every policy that reads them is a pure function of them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

GIB = 1024 ** 3


def gib_to_bytes(gib: float | None) -> int | None:
    """`--vram-budget 3.5` -> 3758096384; None stays None."""
    return None if gib is None else int(gib * GIB)


class VramMode(enum.Enum):
    """Where model weights may live on the compute device (the `--*vram` flags)."""

    HIGH = "highvram"      # load every model fully and keep it there
    NORMAL = "normalvram"  # full load when it fits, else partial; cached models stay while room allows
    LOW = "lowvram"        # only the current call's models stay; weights take at most half the free memory
    NO = "novram"          # no weights stay resident: every module is streamed in for its forward pass
    CPU = "cpu"            # compute on the CPU

    @property
    def is_partial_allowed(self) -> bool:
        return self is not VramMode.HIGH


class MemorySettingsError(ValueError):
    """Start-up flags that contradict each other; the message names the flags and the fix."""


@dataclass(frozen=True)
class MemorySettings:
    vram_mode: VramMode = VramMode.NORMAL
    device: str | None = None                 # "cuda:1", "mps", "xpu:0", "cpu"; None = the best one found
    reserve_vram_bytes: int | None = None     # left free for the OS/other apps; None = platform default
    vram_budget_bytes: int | None = None      # cap on what Plexus may use on the device (simulates a card)
    ram_budget_bytes: int | None = None       # models kept in RAM; None = ram_budget_share of total RAM
    ram_budget_share: float = 0.5
    force_fp32: bool = False
    force_fp16: bool = False
    bf16_unet: bool = False
    fp32_vae: bool = False
    # --int8-unet: on the CPU, LDM UNets (SD1.x / SD2.x / SDXL) keep their Linear and Conv2d weights in int8 and
    # multiply in int8 with dynamically quantised activations (models/int8_weights.py; opt-in).
    int8_unet: bool = False
    pin_memory: bool = True                   # CUDA: page-lock streamed weights for async copies
    # --compile-unet: run the diffusion model's forward through torch.compile (inductor), compiled once per
    # input shape (minutes for a full-size UNet on a CPU, seconds from the on-disk cache); eager while
    # streaming or after a failed compile. See diffusion/compile.py.
    compile_diffusion_model: bool = False
    # --compile-blocking turns this off: the first step of a new shape then waits for its compile instead of
    # running eager while a background thread compiles it.
    compile_in_background: bool = True
    # --compile-cache-dir: inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, unless the environment sets
    # it); main.py defaults it to <base directory>/cache/compile. None: inductor's own default folder.
    compile_cache_dir: str | None = None
    # --attention: the attention backend models are built with (a models.attention name: auto, sdpa, sliced,
    # sub_quadratic); the OOM fall-backs may switch to sub_quadratic for one call.
    attention_backend: str = "auto"
    # On the CPU, run the UNet's convolutions on weights packed once per sampling run (models/prepack.py);
    # --disable-weight-prepack turns it off.
    prepack_weights: bool = True

    def __post_init__(self) -> None:
        if self.force_fp32 and (self.force_fp16 or self.bf16_unet):
            other = "--force-fp16" if self.force_fp16 else "--bf16-unet"
            raise MemorySettingsError(f"--force-fp32 and {other} contradict each other; pass only one")
        if self.force_fp16 and self.bf16_unet:
            raise MemorySettingsError("--force-fp16 and --bf16-unet contradict each other; pass only one")
        for name in ("reserve_vram_bytes", "vram_budget_bytes", "ram_budget_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                flag = "--" + name.removesuffix("_bytes").replace("_", "-")
                raise MemorySettingsError(f"{flag} must be zero or more GB, got {value / GIB:g}")
        if not 0.0 < self.ram_budget_share <= 1.0:
            raise MemorySettingsError(f"ram_budget_share must be in (0, 1], got {self.ram_budget_share}")

    @property
    def is_cpu_only(self) -> bool:
        return self.vram_mode is VramMode.CPU or (self.device or "").startswith("cpu")
