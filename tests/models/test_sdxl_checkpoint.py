"""Loading tiny SDXL-layout checkpoints (models.testing.write_sdxl_checkpoint): every component and the
SDXL text behaviour (both towers penultimate and unnormalised, bigG pooled projected to 1280)."""
from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint


@pytest.mark.parametrize("refiner", [False, True])
def test_tiny_sdxl_checkpoint_loads_every_part(tmp_path, refiner):
    path = write_sdxl_checkpoint(tmp_path / "xl.safetensors", tiny_sdxl_unet_config(refiner=refiner),
                                 refiner=refiner, text=tiny_sdxl_text_configs(), vae=tiny_vae_config())
    ckpt = load_checkpoint(path)
    assert ckpt.config.family == ("sdxl_refiner" if refiner else "sdxl") and ckpt.unconsumed == []
    kinds = [e.kind for e in ckpt.text_encoders]
    assert kinds == (["open_clip_g"] if refiner else ["clip_l", "open_clip_g"])
    assert all(e.default_clip_skip == -2 and not e.config.norm_hidden_state for e in ckpt.text_encoders)
    _, pooled = ckpt.text_encoders[-1].encode("a cat")
    assert pooled.shape == (1, 1280)
    x = torch.randn(1, 4, 8, 8)
    y = torch.randn(1, ckpt.config.unet.adm_in_channels)
    ctx = torch.randn(1, 77, ckpt.config.unet.context_dim)
    assert ckpt.unet(x, torch.tensor([500.0]), ctx, y).shape == (1, 4, 8, 8)


def test_v_pred_and_ztsnr_markers(tmp_path):
    path = write_sdxl_checkpoint(tmp_path / "v.safetensors", tiny_sdxl_unet_config(), text=tiny_sdxl_text_configs(),
                                 vae=tiny_vae_config(), extra_keys={"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])})
    ckpt = load_checkpoint(path)
    assert (ckpt.config.prediction_type, ckpt.config.zero_terminal_snr) == ("v", True)
    assert set(ckpt.unconsumed) == {"v_pred", "ztsnr"}
