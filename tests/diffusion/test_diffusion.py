"""diffusion/: loading and caching, handles, CFG batching and skipping, conditioning ranges and areas,
VAE round trips, previews, on tiny random-weight checkpoints through the real loader."""
from __future__ import annotations

import pytest
import torch

from diffusion import conditioning, ksampler, loading, previews, vae_ops
from diffusion.objects import Autoencoder, DiffusionModel, TextEncoders
from model_management import MemorySettings, ModelManager
from models.testing import random_tensor, write_safetensors_streaming
from sampling.model_sampling import VPrediction


@pytest.fixture
def manager():
    return ModelManager(MemorySettings(force_fp32=True))


@pytest.fixture
def loaded(tiny_sd15, manager):
    return loading.load_checkpoint_file(tiny_sd15, manager)


def empty_latent(batch=1, size=8):
    return {"samples": torch.zeros(batch, 4, size, size)}


def counting(model: DiffusionModel, calls: list) -> DiffusionModel:
    """A clone whose every UNet call records (batch size, cross-attention tensor)."""
    twin = model.clone()

    def wrapper(apply_model, args):
        calls.append((args["input"].shape[0], args["c"]["c_crossattn"]))
        return apply_model(args["input"], args["timestep"], args["c"])
    twin.set_model_unet_function_wrapper(wrapper)
    return twin


def test_checkpoint_loads_as_handles_and_is_cached_per_manager(tiny_sd15, manager, loaded):
    model, clip, vae = loaded
    assert isinstance(model, DiffusionModel) and isinstance(clip, TextEncoders) and isinstance(vae, Autoencoder)
    assert model.latent_format.scale_factor == pytest.approx(0.18215) and model.in_channels == 4
    assert model.get_model_object("model_sampling") is model.model_sampling
    again = loading.load_checkpoint_file(tiny_sd15, manager)
    assert all(a.is_clone_of(b) for a, b in zip(loaded, again))
    other = loading.load_checkpoint_file(tiny_sd15, ModelManager(MemorySettings(force_fp32=True)))
    assert not other[0].is_clone_of(model)
    assert {r["source_key"].rsplit("#", 1)[1] for r in manager.resident()} == {"unet", "text", "vae"}


def test_clones_keep_type_options_and_patches_apart(loaded):
    model, clip, _ = loaded
    twin = model.clone()
    twin.options["extra"] = 1
    key = "out.2.bias"
    assert twin.add_patches({key: lambda w: w + 1.0}) == [key]
    assert type(twin) is DiffusionModel and twin.manager is model.manager
    assert "extra" not in model.options and key not in model.patches
    skipped = clip.with_clip_skip(-2)
    assert type(skipped) is TextEncoders and skipped.clip_skip == -2 and clip.clip_skip is None


def test_patches_reach_the_forward_and_leave_the_base_weights(loaded):
    model, clip, _ = loaded
    cond = conditioning.encode_text(clip, "a cat")
    latent = empty_latent()
    args = {"seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal"}
    base = ksampler.ksample(model, latent, cond, cond, **args)["samples"]
    patched = model.clone()
    patched.add_patches({"out.2.bias": lambda w: w + 0.5})
    different = ksampler.ksample(patched, latent, cond, cond, **args)["samples"]
    assert not torch.allclose(base, different)
    torch.testing.assert_close(ksampler.ksample(model, latent, cond, cond, **args)["samples"], base)


def test_text_encoding_honours_clip_skip_and_weights(loaded):
    _, clip, _ = loaded
    [[last, options]] = conditioning.encode_text(clip, "a cat")
    [[penultimate, _]] = conditioning.encode_text(clip.with_clip_skip(-2), "a cat")
    [[weighted, _]] = conditioning.encode_text(clip, "a (cat:1.5)")
    assert last.shape == (1, 77, 32) and options["pooled_output"].shape[0] == 1
    assert not torch.allclose(last, penultimate) and not torch.allclose(last, weighted)


def test_cfg_batches_cond_and_uncond_and_skips_uncond_at_cfg_1(loaded):
    model, clip, _ = loaded
    pos, neg = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    calls: list = []
    ksampler.ksample(counting(model, calls), empty_latent(), pos, neg, seed=0, steps=2, cfg=7.0,
                     sampler_name="euler", scheduler="normal")
    assert [n for n, _ in calls] == [2, 2]                       # one batched forward per step
    calls.clear()
    ksampler.ksample(counting(model, calls), empty_latent(), pos, neg, seed=0, steps=2, cfg=1.0,
                     sampler_name="euler", scheduler="normal")
    assert [n for n, _ in calls] == [1, 1]                       # cfg 1: no unconditional pass


def test_cfg_batch_is_split_when_the_device_is_short_of_memory(loaded, monkeypatch):
    model, clip, _ = loaded
    pos, neg = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    reference = ksampler.ksample(model, empty_latent(), pos, neg, seed=3, steps=2, cfg=5.0, sampler_name="euler",
                                 scheduler="normal")["samples"]
    one_forward = ksampler.working_memory_bytes(model, (1, 4, 8, 8), 1)
    monkeypatch.setattr(model.manager, "device_available_bytes", lambda: one_forward + 1)
    calls: list = []
    split = ksampler.ksample(counting(model, calls), empty_latent(), pos, neg, seed=3, steps=2, cfg=5.0,
                             sampler_name="euler", scheduler="normal")["samples"]
    assert [n for n, _ in calls] == [1, 1, 1, 1]
    torch.testing.assert_close(split, reference, rtol=1e-3, atol=2e-3)     # batch 1 vs 2 GEMMs round differently


def test_timestep_ranges_pick_the_conditioning_per_step(loaded):
    model, clip, _ = loaded
    early, late = conditioning.encode_text(clip, "early"), conditioning.encode_text(clip, "late")
    positive = conditioning.combine(conditioning.set_timestep_range(early, 0.0, 0.5),
                                    conditioning.set_timestep_range(late, 0.5, 1.0))
    calls: list = []
    ksampler.ksample(counting(model, calls), empty_latent(), positive, positive, seed=0, steps=4, cfg=1.0,
                     sampler_name="euler", scheduler="normal")
    used = [c for _, c in calls]
    assert torch.equal(used[0], early[0][0]) and torch.equal(used[-1], late[0][0])


def test_area_conditioning_runs_on_its_crop(loaded):
    model, clip, _ = loaded
    whole = conditioning.encode_text(clip, "sky")
    area = conditioning.set_area(conditioning.encode_text(clip, "sea"), width=64, height=32, x=0, y=32, strength=1.0)
    shapes = []

    def wrapper(apply_model, args):
        shapes.append(tuple(args["input"].shape))
        return apply_model(args["input"], args["timestep"], args["c"])
    twin = model.clone()
    twin.set_model_unet_function_wrapper(wrapper)
    ksampler.ksample(twin, empty_latent(), conditioning.combine(whole, area), whole, seed=0, steps=1, cfg=1.0,
                     sampler_name="euler", scheduler="normal")
    assert (1, 4, 8, 8) in shapes and (1, 4, 4, 8) in shapes


def test_model_sampling_patch_and_custom_sigmas(loaded):
    from diffusion import model_patches
    model, _, _ = loaded
    v_model = model_patches.with_discrete_sampling(model, "v_prediction", zsnr=True)
    assert isinstance(v_model.model_sampling.prediction, VPrediction)
    assert not isinstance(model.model_sampling.prediction, VPrediction)
    sigmas = ksampler.sigmas_for(model, "karras", 4, denoise=0.5)
    assert len(sigmas) == 5 and sigmas[-1] == 0
    assert len(ksampler.sigmas_for(model, "normal", 4, denoise=0.0)) == 0
    high, low = ksampler.split_sigmas(sigmas, 2)
    assert torch.equal(high[-1], low[0])
    with pytest.raises(ValueError, match="not supported"):
        model_patches.with_discrete_sampling(model, "img_to_img")


def test_vae_round_trip_shapes_and_tiling(loaded):
    _, _, vae = loaded
    image = torch.rand(1, 70, 66, 3)                       # cropped to multiples of 8
    latents = vae_ops.encode(vae, image)
    assert latents.shape == (1, 4, 8, 8)
    decoded = vae_ops.decode(vae, latents)
    assert decoded.shape == (1, 64, 64, 3) and 0 <= decoded.min() and decoded.max() <= 1
    tiled = vae_ops.decode_tiled(vae, latents, tile_px=64, overlap_px=0)
    torch.testing.assert_close(tiled, decoded, rtol=1e-4, atol=1e-4)
    assert vae_ops.encode_tiled(vae, image[:, :64, :64], tile_px=64, overlap_px=0).shape == (1, 4, 8, 8)



def test_vae_ops_run_channels_last_on_cpu_with_the_contiguous_result(loaded):
    """vae_ops hands the VAE channels-last inputs on the CPU (faster there, bench/vae.py); the pixels and latents
    equal the module's own contiguous run up to fp32 summation order, and come back contiguous."""
    _, _, vae = loaded
    latents = torch.randn(1, 4, 8, 8)
    image = torch.rand(1, 64, 64, 3)
    seen = []
    hooks = [part.register_forward_pre_hook(lambda _, args: seen.append(args[0])) for part in
             (vae.module.decoder, vae.module.encoder)]
    try:
        decoded = vae_ops.decode(vae, latents)
        encoded = vae_ops.encode(vae, image)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 2 and all(x.is_contiguous(memory_format=torch.channels_last) for x in seen)
    with torch.inference_mode():
        expected_image = ((vae.module.decode(latents.contiguous()) + 1) / 2).clamp(0, 1).movedim(1, -1)
        expected_latents = vae.module.encode(image.movedim(-1, 1).contiguous() * 2 - 1)
    assert decoded.is_contiguous() and encoded.is_contiguous()
    torch.testing.assert_close(decoded, expected_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(encoded, expected_latents, rtol=0, atol=1e-5)


def test_vae_falls_back_to_tiles_when_memory_runs_out(loaded, monkeypatch):
    _, _, vae = loaded
    latents = torch.randn(1, 4, 8, 8)
    expected = vae_ops.decode_tiled(vae, latents)
    tiled_calls = []
    original_decode, original_tiled = vae.module.decode, vae.module.decode_tiled

    def out_of_memory_once(z):
        if not tiled_calls:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original_decode(z)
    monkeypatch.setattr(vae.module, "decode", out_of_memory_once)
    monkeypatch.setattr(vae.module, "decode_tiled", lambda *a: tiled_calls.append(a) or original_tiled(*a))
    torch.testing.assert_close(vae_ops.decode(vae, latents), expected)
    assert tiled_calls


def test_previews_linear_and_taesd(loaded, tmp_path):
    model, _, _ = loaded
    x0 = torch.randn(1, 4, 8, 8)
    assert previews.previewer_for(model, [tmp_path], "none") is None
    linear = previews.previewer_for(model, [tmp_path], "taesd")   # no decoder file yet: linear
    assert linear(x0).shape == (8, 8, 3) and linear(x0).dtype == torch.uint8
    decoder = previews.taesd_decoder()
    layout = {k: (tuple(v.shape), torch.float32) for k, v in decoder.state_dict().items()}
    write_safetensors_streaming(tmp_path / "taesd_decoder.safetensors", layout,
                                lambda k: random_tensor(k, layout[k][0], torch.float32, 0))
    for method in ("auto", "latent2rgb"):            # ComfyUI 0.3.64: auto is latent2rgb
        assert previews.previewer_for(model, [tmp_path], method)(x0).shape == (8, 8, 3)
    taesd = previews.previewer_for(model, [tmp_path], "taesd")
    rgb = taesd(x0)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == torch.uint8
    assert len(ksampler.encode_jpeg(rgb)) > 100


def test_conditioning_operations_copy_and_combine():
    a = [[torch.ones(1, 77, 8), {"pooled_output": torch.ones(1, 8)}]]
    b = [[torch.zeros(1, 154, 8), {"pooled_output": torch.zeros(1, 8)}]]
    averaged = conditioning.average(a, b, 0.25)
    assert averaged[0][0].shape == (1, 77, 8) and torch.allclose(averaged[0][0], torch.full((1, 77, 8), 0.25))
    assert torch.allclose(averaged[0][1]["pooled_output"], torch.full((1, 8), 0.25))
    assert conditioning.concat(a, b)[0][0].shape == (1, 231, 8)
    zeroed = conditioning.zero_out(a)
    assert torch.count_nonzero(zeroed[0][0]) == 0 and torch.count_nonzero(zeroed[0][1]["pooled_output"]) == 0
    ranged = conditioning.set_timestep_range(a, 0.2, 0.7)
    assert ranged[0][1]["start_percent"] == 0.2 and "start_percent" not in a[0][1]
    assert conditioning.set_area(a, 64, 32, 8, 16, 0.5)[0][1]["area"] == (4, 8, 2, 1)
    assert len(conditioning.combine(a, b)) == 2


def test_standalone_vae_unet_and_text_encoder_files(tiny_sd15, manager, tmp_path):
    from models.files import load_state_dict
    from models.testing import text_encoder_config, write_random_vae
    from models.text import random_text_encoder_state_dict
    from tests.diffusion.helpers import TINY_VAE

    vae = loading.load_vae_file(write_random_vae(tmp_path / "vae.safetensors", TINY_VAE), manager)
    assert isinstance(vae, Autoencoder) and vae.downscale_ratio == 8
    with load_state_dict(tiny_sd15) as source:
        unet_keys = {k: source[k] for k in source if k.startswith("model.diffusion_model.")}
    layout = {k.removeprefix("model.diffusion_model."): (tuple(v.shape), v.dtype) for k, v in unet_keys.items()}
    write_safetensors_streaming(tmp_path / "unet.safetensors", layout,
                                lambda k: unet_keys["model.diffusion_model." + k])
    model = loading.load_unet_file(tmp_path / "unet.safetensors", manager)
    assert isinstance(model, DiffusionModel) and model.in_channels == 4 and model.model_config is None
    text_state = random_text_encoder_state_dict("clip_l", text_encoder_config("sd1", 32))
    layout = {k: (tuple(v.shape), v.dtype) for k, v in text_state.items()}
    write_safetensors_streaming(tmp_path / "clip_l.safetensors", layout, text_state.__getitem__)
    clip = loading.load_text_encoder_file(tmp_path / "clip_l.safetensors", manager)
    [[cond, _]] = conditioning.encode_text(clip, "a cat")
    assert cond.shape == (1, 77, 32)
    latent = ksampler.ksample(model, empty_latent(), [[cond, {}]], [[cond, {}]], seed=0, steps=1, cfg=2.0,
                              sampler_name="euler", scheduler="normal")
    assert vae_ops.decode(vae, latent["samples"]).shape == (1, 64, 64, 3)
    with pytest.raises(Exception, match="not supported yet"):
        loading.load_text_encoder_file(tmp_path / "clip_l.safetensors", manager, "flux")
