"""CLIPSave round trips for the bigger text towers: SD2's OpenCLIP-H and SDXL's CLIP-L + OpenCLIP-bigG.
Each saved file loads back through the standalone loaders (CLIPLoader, DualCLIPLoader type sdxl) and
encodes a prompt exactly as the checkpoint's own CLIP does."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from diffusion import conditioning, loading, saving, saving_parts, sdxl
from model_management import MemorySettings, ModelManager
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
from models.text import ClipTextConfig, load_text_encoder, random_text_encoder_state_dict

PROMPT = "a (red:1.2) cat on a mat"


@pytest.fixture(scope="module")
def manager():
    return ModelManager(MemorySettings(force_fp32=True))


def _keys(path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _encoding(clip):
    tensor, options = conditioning.encode_text(clip, PROMPT)[0]
    return tensor, options.get("pooled_output")


def _h_tower(manager):
    """An SD2 OpenCLIP-H text tower (OpenCLIP layout, as in SD2 checkpoints) 64 wide but with ViT-H's 23
    layers, the count by which a Hugging Face-layout file is told from CLIP-L (as ComfyUI tells it)."""
    config = ClipTextConfig.of_kind("open_clip_h", hidden_size=64, num_layers=23, num_heads=1,
                                    intermediate_size=128, projection_dim=64)
    state = random_text_encoder_state_dict("open_clip_h", config, seed=5)
    return loading.wrap_text_encoders([load_text_encoder("open_clip_h", state)], manager, source_key="h-tower")


def test_sd2_open_clip_h_round_trip(tmp_path, manager):
    clip = _h_tower(manager)
    (path,) = saving_parts.save_clip(lambda tower: tmp_path / f"clip_{tower}.safetensors", clip)
    assert path.name == "clip_clip_h.safetensors"
    keys = _keys(path)
    assert all(k.startswith("text_model.") or k == "text_projection.weight" for k in keys)    # HF, as ComfyUI
    assert "text_model.encoder.layers.22.mlp.fc1.weight" in keys
    loaded = loading.load_text_encoder_file(path, manager)
    (tower,) = loaded.module.towers.values()
    assert tower.config.kind == "clip_h" and tower.default_clip_skip == -2 and tower.config.pad_token == 0
    ours, theirs = _encoding(loaded), _encoding(clip)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    # a checkpoint written with it holds SD2's OpenCLIP layout again, the same tensors as from the original
    ours_sd2, theirs_sd2 = saving._text_entries(loaded), saving._text_entries(clip)
    assert sorted(ours_sd2) == sorted(theirs_sd2) and all(k.startswith("cond_stage_model.model.") for k in ours_sd2)
    for key, (make, _, _) in theirs_sd2.items():
        torch.testing.assert_close(ours_sd2[key][0](), make())
    # saved again from the loaded file: the same tower name and tensors
    (again,) = saving_parts.save_clip(lambda tower: tmp_path / f"again_{tower}.safetensors", loaded)
    assert again.name == "again_clip_h.safetensors" and _keys(again) == keys


def test_hf_layout_kind_rule():
    from models.detection import hf_text_encoder_kind
    layer = "text_model.encoder.layers.{}.mlp.fc1.weight"
    l_shapes = {"text_model.embeddings.token_embedding.weight": (49408, 768), **{layer.format(i): (3072, 768) for i in range(12)}}
    h_full = {"text_model.embeddings.token_embedding.weight": (49408, 1024), layer.format(0): (4096, 1024)}
    assert hf_text_encoder_kind(l_shapes) == "clip_l" and hf_text_encoder_kind(h_full) == "clip_h"
    g_like = {"text_model.embeddings.token_embedding.weight": (49408, 64), **{layer.format(i): (1, 1) for i in range(32)}}
    assert hf_text_encoder_kind(g_like) == "clip_l"          # 32 layers: bigG's count, not ViT-H


def test_sdxl_clip_l_and_big_g_round_trip(tmp_path, manager):
    ckpt = write_sdxl_checkpoint(tmp_path / "xl.safetensors", tiny_sdxl_unet_config(), text=tiny_sdxl_text_configs(),
                                 vae=tiny_vae_config(), seed=4)
    _, clip, _ = loading.load_checkpoint_file(ckpt, manager)
    paths = saving_parts.save_clip(lambda tower: tmp_path / f"clip_{tower}.safetensors", clip)
    assert sorted(p.name for p in paths) == ["clip_clip_g.safetensors", "clip_clip_l.safetensors"]
    loaded = sdxl.load_sdxl_text_encoder_files(list(reversed(paths)), manager)     # either order
    # the checkpoint's bigG is "open_clip_g" (OpenCLIP layout), the saved file's "clip_g" (HF): same tower
    assert list(loaded.module.towers) == ["clip_l", "clip_g"] and list(clip.module.towers) == ["clip_l", "open_clip_g"]
    ours, theirs = _encoding(loaded), _encoding(clip)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
