"""Our AutoencoderKL against diffusers' on the same tiny random weights; tiling and OOM fall-back."""
from __future__ import annotations

import pytest
import torch

from models.attention import ATTENTION_BACKENDS, set_attention_backend
from models.checkpoint import load_checkpoint, load_vae
from models.files import load_state_dict
from models.testing import module_layout, random_tensor, tiny_vae_config, write_random_vae
from models.vae import AutoencoderKL, VAEConfig

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402


def reference_vae(path, config: VAEConfig):
    with load_state_dict(path) as source:
        checkpoint = dict(source.items())
    n = len(config.ch_mult)
    dconfig = dict(in_channels=config.in_channels, out_channels=config.out_channels,
                   block_out_channels=[config.ch * m for m in config.ch_mult],
                   down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                   layers_per_block=config.num_res_blocks, latent_channels=config.z_channels,
                   norm_num_groups=config.norm_groups)
    model = diffusers.AutoencoderKL(**dconfig)
    model.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, dconfig), strict=True)
    return model.eval()


def test_vae_matches_diffusers(tiny_checkpoint):
    path = tiny_checkpoint("sd1")
    ckpt = load_checkpoint(path)
    reference = reference_vae(path, ckpt.config.vae)
    images = torch.rand(2, 3, 32, 24) * 2 - 1
    latents = torch.randn(2, 4, 8, 6)
    with torch.no_grad():
        expected_mean = reference.encode(images).latent_dist.mean
        expected_images = reference.decode(latents).sample
        for backend in ATTENTION_BACKENDS:
            set_attention_backend(ckpt.vae, backend)
            assert (ckpt.vae.encode(images) - expected_mean).abs().max() < 1e-4, backend
            assert (ckpt.vae.decode(latents) - expected_images).abs().max() < 1e-4, backend


def test_sampled_encode_uses_the_posterior(tiny_checkpoint):
    vae = load_checkpoint(tiny_checkpoint("sd1")).vae
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(images)
        a = vae.encode(images, generator=torch.Generator().manual_seed(1))
        b = vae.encode(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, mean)


def test_standalone_vae_file(tmp_path):
    path = write_random_vae(tmp_path / "vae.safetensors", tiny_vae_config(), dtype=torch.float16)
    vae, config = load_vae(path)
    assert config == tiny_vae_config() and vae.dtype == torch.float16
    vae32, _ = load_vae(path, dtype=torch.float32)
    reference = reference_vae(path, config)
    latents = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        assert (vae32.decode(latents) - reference.decode(latents).sample).abs().max() < 1e-4


def test_tiling_blends_a_local_map_exactly():
    """For a map without long-range context, overlapping tiles blend back to exactly the whole result."""
    from models.vae import run_tiled
    x = torch.randn(2, 4, 23, 17)
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=4.0)[:, :3] * 2 + 1   # noqa: E731
    down = lambda t: torch.nn.functional.avg_pool2d(t, 4)                                 # noqa: E731
    assert (run_tiled(up, x, tile=8, overlap=3, scale=4, out_channels=3) - up(x)).abs().max() < 1e-5
    big = torch.randn(1, 4, 96, 80)
    assert (run_tiled(down, big, tile=32, overlap=8, scale=0.25, out_channels=4) - down(big)).abs().max() < 1e-5


def test_tiled_vae_decode_and_encode(tiny_checkpoint):
    vae = load_checkpoint(tiny_checkpoint("sd1")).vae
    latents = torch.randn(1, 4, 24, 20)
    images = torch.rand(1, 3, 96, 80) * 2 - 1
    with torch.no_grad():
        whole = vae.decode(latents)
        tiled = vae.decode_tiled(latents, tile_latent=12, overlap_latent=4)
        assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
        # tiles see less context (the mid-block attention is global), so they differ a little
        assert torch.corrcoef(torch.stack([tiled.flatten(), whole.flatten()]))[0, 1] > 0.8
        assert (vae.decode_tiled(latents, tile_latent=64) - whole).abs().max() < 1e-5   # one tile == whole
        enc = vae.encode_tiled(images, tile_px=48, overlap_px=16)
        assert enc.shape == (1, 4, 24, 20) and torch.isfinite(enc).all()
        assert (vae.encode_tiled(images, tile_px=512) - vae.encode(images)).abs().max() < 1e-5


def test_out_of_memory_falls_back_to_tiles(tiny_checkpoint, monkeypatch):
    vae = load_checkpoint(tiny_checkpoint("sd1")).vae
    latents = torch.randn(1, 4, 20, 20)
    real_decoder_forward = vae.decoder.forward

    def limited(z):
        if z.shape[-1] > 10:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_decoder_forward(z)
    monkeypatch.setattr(vae.decoder, "forward", limited)
    with torch.no_grad():
        out = vae.decode_auto(latents, tile_latent=8, overlap_latent=2)
        assert out.shape == (1, 3, 80, 80) and torch.isfinite(out).all()
        with pytest.raises(torch.OutOfMemoryError):
            vae.decode(latents)

    def broken(z):
        raise RuntimeError("some other failure")
    monkeypatch.setattr(vae.decoder, "forward", broken)
    with pytest.raises(RuntimeError, match="other failure"):
        vae.decode_auto(latents)


def test_full_size_vae_builds_on_meta():
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig())
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


# bf16 keeps 8 significant bits, so one rounding moves a value by at most 2**-8 of itself (unit roundoff u).
BF16_UNIT_ROUNDOFF = 2.0 ** -8


def test_bf16_decode_and_encode_stay_within_a_few_bf16_roundings_of_fp32():
    """The VAE in bf16 (the CPU default where bf16 is native) against fp32 on the same weights.

    Images on ComfyUI's 0..1 scale ((x + 1) / 2, clamped; one 8-bit step is 1/255 ~ u). Weights, activations
    and the output are each rounded to bf16; the errors are independent and mostly cancel, so the mean pixel
    error stays below one rounding of a full-scale value (u; measured ~0.5u on three seeds and three tiny
    configs) and the worst pixel below 8u (measured <= 5.1u). The encoder's mean error stays below 4u of the
    latents' spread (measured ~3u). fp32 decodes are compared with diffusers at 1e-4 above."""
    config = tiny_vae_config()
    fp32 = AutoencoderKL(config).eval()
    fp32.load_state_dict({k: random_tensor(k, s, torch.float32, 0)
                          for k, s in module_layout(AutoencoderKL, config, "").items()})
    bf16 = AutoencoderKL(config).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16.to(torch.bfloat16)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) / 0.18215   # raw SD1 scale
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        decoded = bf16.decode(latents)
        assert decoded.dtype is torch.bfloat16
        error = (((decoded.float() + 1) / 2).clamp(0, 1) - ((fp32.decode(latents) + 1) / 2).clamp(0, 1)).abs()
        reference_latents = fp32.encode(images)
        latent_error = (bf16.encode(images).float() - reference_latents).abs()
    assert 0 < error.mean() < BF16_UNIT_ROUNDOFF and error.max() < 8 * BF16_UNIT_ROUNDOFF
    assert latent_error.mean() < 4 * BF16_UNIT_ROUNDOFF * reference_latents.std()
