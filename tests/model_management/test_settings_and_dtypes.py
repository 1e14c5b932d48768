"""Start-up settings, device discovery without probing at import, and the dtype policy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_management import (MemorySettings, MemorySettingsError, ModelPart, VramMode, choose_dtype,
                              gib_to_bytes)
from model_management.devices import DeviceCaps, cpu_flags, cpu_native_bf16_flags, device_caps
from model_management.dtypes import DtypeChoice, choose_attention_upcast

ROOT = Path(__file__).resolve().parents[2]
CPU_BF16 = DeviceCaps("cpu", "cpu", has_fast_fp16=False, has_bf16=True, bf16_reason="cpu flags amx_bf16")
CPU_PLAIN = DeviceCaps("cpu", "cpu", False, False, "no avx512_bf16/amx_bf16 cpu flag")
AMPERE = DeviceCaps("cuda", "cuda:0 RTX 3060", True, True, "compute capability 8.6")
PASCAL = DeviceCaps("cuda", "cuda:0 GTX 1080", False, False, "compute capability 6.1")
TURING = DeviceCaps("cuda", "cuda:0 RTX 2060", True, False, "compute capability 7.5")


def test_contradicting_flags_are_named_in_the_error() -> None:
    with pytest.raises(MemorySettingsError, match="--force-fp32 and --force-fp16"):
        MemorySettings(force_fp32=True, force_fp16=True)
    with pytest.raises(MemorySettingsError, match="--vram-budget"):
        MemorySettings(vram_budget_bytes=-1)
    assert gib_to_bytes(1.5) == 1610612736 and gib_to_bytes(None) is None


def test_importing_and_building_a_manager_probes_no_device() -> None:
    code = ("import torch\n"
            "def boom(*a, **k): raise SystemExit('probed a device')\n"
            "torch.cuda.is_available = torch.cuda.device_count = boom\n"
            "import model_management\n"
            "from model_management import ModelManager, MemorySettings\n"
            "ModelManager(MemorySettings())\n"
            "print('quiet')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "quiet", out.stderr


def test_cpu_bf16_is_detected_from_cpuinfo_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    flags = cpu_flags(info)
    assert cpu_native_bf16_flags(flags) == ("avx512_bf16", "amx_bf16")
    assert cpu_flags(tmp_path / "missing") == frozenset()
    caps = device_caps(torch.device("cpu"), cpu_flag_set=frozenset({"avx2"}))
    assert not caps.has_bf16 and "no avx512_bf16" in caps.bf16_reason
    assert device_caps(torch.device("cpu"), cpu_flag_set=flags).has_bf16


@pytest.mark.parametrize("caps, unet, text, vae", [
    (CPU_BF16, torch.bfloat16, torch.float32, torch.bfloat16),   # native bf16: VAE in bf16 too
    (CPU_PLAIN, torch.float32, torch.float32, torch.float32),
    (AMPERE, torch.float16, torch.float16, torch.bfloat16),
    (TURING, torch.float16, torch.float16, torch.float32),   # fp16 VAE would give NaN, no bf16: fp32
    (PASCAL, torch.float32, torch.float32, torch.float32),
])
def test_default_dtypes_per_device(caps, unet, text, vae) -> None:
    settings = MemorySettings()
    got = [choose_dtype(part, caps, settings).dtype for part in ModelPart]
    assert got == [unet, text, vae]
    for part in ModelPart:
        assert choose_dtype(part, caps, settings).reason       # every choice says why


def test_flags_override_the_defaults_with_their_name_as_reason() -> None:
    fp32 = choose_dtype(ModelPart.DIFFUSION, AMPERE, MemorySettings(force_fp32=True))
    assert (fp32.dtype, fp32.reason) == (torch.float32, "--force-fp32")
    assert choose_dtype(ModelPart.DIFFUSION, TURING, MemorySettings(bf16_unet=True)).dtype is torch.bfloat16
    assert choose_dtype(ModelPart.VAE, AMPERE, MemorySettings(fp32_vae=True)).dtype is torch.float32
    forced = choose_dtype(ModelPart.DIFFUSION, CPU_PLAIN, MemorySettings(force_fp16=True))
    assert forced.dtype is torch.float16
    # --force-fp16 does not push an fp16-unsafe VAE into NaNs, unless the model says it is safe
    assert choose_dtype(ModelPart.VAE, AMPERE, MemorySettings(force_fp16=True)).dtype is torch.bfloat16
    assert choose_dtype(ModelPart.VAE, AMPERE, MemorySettings(), is_fp16_safe=True).dtype is torch.float16



def test_cpu_vae_is_bf16_only_with_native_bf16_and_the_flags_keep_fp32() -> None:
    default = choose_dtype(ModelPart.VAE, CPU_BF16, MemorySettings())
    assert default.dtype is torch.bfloat16
    assert "native bf16" in default.reason and "fp32's range" in default.reason and "--fp32-vae" in default.reason
    assert choose_dtype(ModelPart.VAE, CPU_BF16, MemorySettings(fp32_vae=True)) == \
        DtypeChoice(torch.float32, "--fp32-vae")
    assert choose_dtype(ModelPart.VAE, CPU_BF16, MemorySettings(force_fp32=True)) == \
        DtypeChoice(torch.float32, "--force-fp32")
    # --force-fp16 does not put the fp16-unsafe VAE in fp16 on a CPU either
    assert choose_dtype(ModelPart.VAE, CPU_BF16, MemorySettings(force_fp16=True)).dtype is torch.bfloat16
    assert choose_dtype(ModelPart.VAE, CPU_BF16, MemorySettings(), model_dtypes=[torch.float32]).dtype \
        is torch.float32
    plain = choose_dtype(ModelPart.VAE, CPU_PLAIN, MemorySettings())
    assert plain.dtype is torch.float32 and "without native bf16" in plain.reason


def test_model_restrictions_and_attention_upcast() -> None:
    fp32_only = choose_dtype(ModelPart.DIFFUSION, AMPERE, MemorySettings(), model_dtypes=[torch.float32])
    assert fp32_only.dtype is torch.float32
    unsafe = choose_dtype(ModelPart.DIFFUSION, AMPERE, MemorySettings(), is_fp16_safe=False)
    assert unsafe.dtype is torch.bfloat16 and "fp16 is unsafe" in unsafe.reason
    assert choose_attention_upcast(torch.float16, True)[0] is True          # SD2.x in fp16
    assert choose_attention_upcast(torch.bfloat16, True)[0] is False
    assert choose_attention_upcast(torch.float16, False)[0] is False


def test_cpu_flag_means_cpu_mode() -> None:
    assert MemorySettings(vram_mode=VramMode.CPU).is_cpu_only
    assert MemorySettings(device="cpu").is_cpu_only
    assert not MemorySettings().is_cpu_only
