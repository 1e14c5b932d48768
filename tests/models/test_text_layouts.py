"""Full-size text-encoder layouts against the key manifests of real SD1.5 / SD2.1 / SDXL files (meta tensors only)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.text import (
    ClipTextConfig,
    load_text_encoder,
    random_text_encoder_state_dict,
    text_encoder_config_from_shapes,
)

MANIFESTS = Path(__file__).resolve().parent.parent / "data" / "manifests"
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}

CASES = {
    # manifest, checkpoint prefix, kind, expected config
    "sd15": ("sd15_emaonly.json", "cond_stage_model.transformer.", "clip_l", ClipTextConfig.of_kind(
        "clip_l", hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)),
    "sd21": ("sd21_768v.json", "cond_stage_model.model.", "open_clip_h", ClipTextConfig.of_kind(
        "open_clip_h", hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
        projection_dim=1024)),
    # SDXL base 1.0: CLIP-L in HF layout without text_projection, bigG (1280 wide, 32 layers, 20 heads,
    # 5120 MLP, 1280 projection) in OpenCLIP layout
    "sdxl_clip_l": ("sdxl_base.json", "conditioner.embedders.0.transformer.", "clip_l", ClipTextConfig.of_kind(
        "clip_l", hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)),
    "sdxl_big_g": ("sdxl_base.json", "conditioner.embedders.1.model.", "open_clip_g", ClipTextConfig.of_kind(
        "open_clip_g", hidden_size=1280, num_layers=32, num_heads=20, intermediate_size=5120,
        projection_dim=1280)),
}


def manifest_tensors(name: str, prefix: str) -> dict[str, torch.Tensor]:
    path = MANIFESTS / name
    tensors = json.loads(path.read_text(encoding="utf-8"))["tensors"]
    return {k[len(prefix):]: torch.empty(shape, dtype=DTYPES[dtype], device="meta")
            for k, (shape, dtype) in tensors.items() if k.startswith(prefix)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_size_config_from_the_real_layout(case: str) -> None:
    name, prefix, kind, expected = CASES[case]
    shapes = {k: tuple(v.shape) for k, v in manifest_tensors(name, prefix).items()}
    assert text_encoder_config_from_shapes(kind, shapes) == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_real_key_maps(case: str) -> None:
    name, prefix, kind, expected = CASES[case]
    tensors = manifest_tensors(name, prefix)
    encoder = load_text_encoder(kind, tensors)                   # raises on any unmapped / missing key
    assert encoder.config == expected and encoder.model.token_embedding.weight.is_meta
    params = sum(p.numel() for p in encoder.parameters())
    stored = sum(t.numel() for k, t in tensors.items() if not k.endswith(("position_ids", "logit_scale")))
    assert params == stored                                      # nothing dropped but the two unused keys


@pytest.mark.parametrize("case", sorted(CASES))
def test_random_full_size_weights_have_the_real_layout(case: str) -> None:
    name, prefix, kind, expected = CASES[case]
    real = {k: (tuple(v.shape), v.dtype) for k, v in manifest_tensors(name, prefix).items()}
    dtype = next(d for _, d in real.values() if d.is_floating_point)
    ours = {k: (tuple(v.shape), v.dtype) for k, v in
            random_text_encoder_state_dict(kind, expected, device="meta", dtype=dtype).items()}
    assert ours == real
