"""What the SDXL family sets on a loaded MODEL: latent format (scale 0.13025, ComfyUI's SDXL latent-RGB
factors, TAESD-XL when its decoder file is present), v-prediction and zero-terminal-SNR sampling."""
from __future__ import annotations

from dataclasses import replace

import torch

from diffusion.loading import latent_format_for, model_sampling_for
from diffusion.previews import find_taesd_decoder
from models.detection import detect
from models.testing import SDXL_UNET_CONFIGS, sdxl_layout
from sampling import latent_format as latent_formats
from sampling.model_sampling import VPrediction


def sdxl_config(**extra):
    shapes = {k: s for k, (s, _) in sdxl_layout(SDXL_UNET_CONFIGS["base"]).items()}
    return detect(shapes | extra)


def test_sdxl_latent_format_and_preview_factors():
    fmt = latent_format_for(sdxl_config())
    assert fmt.scale_factor == 0.13025 and fmt.rgb_factors == latent_formats.SDXL.rgb_factors
    assert fmt.rgb_bias == (0.1084, -0.0175, -0.0011) and fmt.taesd_decoder_name == "taesdxl_decoder"
    assert latent_format_for(replace(sdxl_config(), family="sd1")).rgb_factors == latent_formats.SD15.rgb_factors


def test_taesd_xl_decoder_is_found_in_vae_approx(tmp_path):
    (tmp_path / "taesd_decoder.safetensors").write_bytes(b"")
    assert find_taesd_decoder("taesdxl_decoder", [tmp_path]) is None
    (tmp_path / "taesdxl_decoder.safetensors").write_bytes(b"")
    assert find_taesd_decoder(latent_format_for(sdxl_config()).taesd_decoder_name, [tmp_path]).name == \
        "taesdxl_decoder.safetensors"


def test_v_pred_and_ztsnr_files_sample_as_comfyui_does():
    plain, v, z = (model_sampling_for(sdxl_config(**extra)) for extra in
                   ({}, {"v_pred": (0,)}, {"v_pred": (0,), "ztsnr": (0,)}))
    assert isinstance(v.prediction, VPrediction) and not isinstance(plain.prediction, VPrediction)
    assert torch.equal(v.sigmas, plain.sigmas)
    assert z.sigmas[-1] > 1000 > plain.sigmas[-1]          # zero terminal SNR: the last sigma becomes huge


def test_standalone_sdxl_unet_file_samples_in_the_sdxl_latent_space(tmp_path):
    """UNETLoader on an SDXL UNet alone (diffusion_models/): ComfyUI detects the SDXL model from the UNet and
    uses its latent format (scale 0.13025, SDXL preview factors); an SD1.5 UNet keeps SD1.5's."""
    from safetensors.torch import load_file, save_file

    from diffusion.loading import load_unet_file
    from model_management import MemorySettings, ModelManager
    from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
    full = load_file(str(write_sdxl_checkpoint(tmp_path / "xl.safetensors", tiny_sdxl_unet_config(),
                                               text=tiny_sdxl_text_configs(), vae=tiny_vae_config())))
    prefix = "model.diffusion_model."
    save_file({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}, str(tmp_path / "unet.safetensors"))
    model = load_unet_file(tmp_path / "unet.safetensors", ModelManager(MemorySettings(force_fp32=True)))
    fmt = model.options["latent_format"]
    assert fmt.scale_factor == 0.13025 and fmt.rgb_factors == latent_formats.SDXL.rgb_factors
