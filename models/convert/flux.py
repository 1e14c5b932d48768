"""FLUX.1 file keys -> models.flux.Flux keys (the BFL layout is the module layout: one to one under the
file's prefix), and ComfyUI's `scaled_fp8` files: each fp8 e4m3fn weight `L.weight` comes with a
float32 `L.scale_weight` (the dequantised weight is weight * scale_weight), optionally `L.scale_input`,
and a `scaled_fp8` marker tensor at the top (ComfyUI comfy/ops.py scaled_fp8_ops and
model_detection's `scaled_fp8` key; facts, not code)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

SCALE_SUFFIXES = (".scale_weight", ".scale_input")
SCALED_FP8_MARKER = "scaled_fp8"


def is_scaled_fp8(keys: Iterable[str], prefix: str) -> bool:
    return prefix + SCALED_FP8_MARKER in set(keys)


def flux_key_map(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """{module key: file key} for every transformer tensor under `prefix` (scale tensors left out)."""
    return {k[len(prefix):]: k for k in keys
            if k.startswith(prefix) and not k.endswith(SCALE_SUFFIXES) and k != prefix + SCALED_FP8_MARKER}


def weight_scales(keys: Iterable[str], key_map: Mapping[str, str]) -> dict[str, str]:
    """{module key of a weight: file key of its scale_weight}."""
    keys = set(keys)
    out = {}
    for name, file_key in key_map.items():
        if file_key.endswith(".weight"):
            scale = file_key[: -len(".weight")] + ".scale_weight"
            if scale in keys:
                out[name] = scale
    return out


def dequantised(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """weight * scale_weight in float32, then `dtype`."""
    return (weight.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def apply_weight_scales(module: torch.nn.Module, scales: Mapping[str, str], source: Mapping[str, Tensor]) -> None:
    """Multiply the loaded (already cast) weights by their file scales, in place."""
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, scale_key in scales.items():
            p = params[name]
            p.copy_(dequantised(p, source[scale_key], p.dtype))


def scaled_lazy(key_map: Mapping[str, str], scales: Mapping[str, str]):
    """Module key -> the file's tensor, dequantised where the file has a scale (for rebuilds)."""
    def lazy(source) -> dict[str, Tensor]:
        return {name: dequantised(source[fk], source[scales[name]], torch.float32) if name in scales else source[fk]
                for name, fk in key_map.items()}
    return lazy
