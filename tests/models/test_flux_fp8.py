"""FLUX.1 fp8 files kept in fp8 (models/flux_checkpoint.py build_fp8_flux), and ComfyUI's scaled fp8.

The references are independent of the fp8 path: the transformer built in fp32 from a state dict made here
by hand from the file's tensors. For scaled fp8 that state is what ComfyUI's scaled-fp8 model holds
(comfy/ops.py scaled_fp8_ops, behaviour): every Linear created in the fp8 dtype, so the file's float32
biases (and any unscaled Linear weight) are rounded to e4m3fn when loaded, and each scaled weight means
weight * scale_weight. Before build_fp8_flux the biases were kept unrounded (a small difference; the
fidelity case flux/schnell/scaled_fp8's max 66 / mean 10.35 of 255 came from the schnell sampling, see
test_schnell_samples_plain_flow_as_comfyuis_flux_schnell)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.flux import load_diffusion_model_file
from model_management import MemorySettings, ModelManager, VramMode
from models.files import load_state_dict
from models.flux import Flux
from models.fp8_weights import ScaledFp8Linear
from models.testing import random_tensor, tiny_flux_config, write_random_flux

FP8 = torch.float8_e4m3fn


def flux_inputs(config, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    out = {"x": torch.randn(1, 16, 8, 8, generator=g), "timesteps": torch.tensor([0.7]),
           "context": torch.randn(1, 5, config.context_in_dim, generator=g),
           "y": torch.randn(1, config.vec_in_dim, generator=g)}
    if config.guidance_embed:
        out["guidance"] = torch.tensor([3.5])
    return out


def reference(path, config, state_fn) -> Flux:
    """Flux in fp32 from {key: state_fn(key, tensors)} of the file's tensors."""
    with load_state_dict(path) as source:
        tensors = {k: source[k].clone() for k in source}
    module = Flux(config).eval()
    module.load_state_dict({k: state_fn(k, tensors) for k in module.state_dict()})
    return module


def linear_keys(config) -> set[str]:
    with torch.device("meta"):
        module = Flux(config)
    return {f"{n}.{p}" for n, m in module.named_modules() if isinstance(m, nn.Linear)
            for p, _ in m.named_parameters(recurse=False)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fluxfp8")
    schnell = tiny_flux_config(guidance=False)
    dev = tiny_flux_config()
    return {"scaled": (write_random_flux(tmp / "scaled.safetensors", schnell, scaled_fp8=True, seed=1), schnell),
            "fp8": (write_random_flux(tmp / "fp8.safetensors", dev, dtype=FP8, seed=2), dev),
            "bf16": (write_random_flux(tmp / "bf16.safetensors", dev, dtype=torch.bfloat16, seed=2), dev)}


def run(model, config):
    with torch.no_grad():
        return model.module(**flux_inputs(config)) if hasattr(model, "module") else model(**flux_inputs(config))


def test_scaled_fp8_computes_as_comfyuis_scaled_fp8_model(files):
    path, config = files["scaled"]
    in_linears = linear_keys(config)

    def comfy_state(key, t):
        base = key.removesuffix(".weight")
        if key.endswith(".weight") and base + ".scale_weight" in t:
            return t[key].float() * t[base + ".scale_weight"].float()
        return t[key].to(FP8).float() if key in in_linears else t[key].float()

    with load_state_dict(path) as source:                      # the file's biases are float32, not fp8
        assert source.dtype_of("img_in.bias") == torch.float32 and source.dtype_of("img_in.weight") == FP8
    model = load_diffusion_model_file(path, ModelManager(MemorySettings(force_fp32=True)))
    module = model.module
    assert isinstance(module.img_in, ScaledFp8Linear) and module.img_in.bias.dtype == FP8
    assert {p.dtype for n, p in module.named_parameters() if n in in_linears} == {FP8}
    assert {p.dtype for n, p in module.named_parameters() if n not in in_linears} == {torch.float32}
    expected = run(reference(path, config, comfy_state), config)
    torch.testing.assert_close(run(model, config), expected, rtol=1e-5, atol=1e-5)
    # the earlier dequantisation (float32 biases as stored) is a different model: this test sees the rounding
    unrounded = run(reference(path, config, lambda k, t: comfy_state(k, t) if k.endswith(".weight") or
                              k not in in_linears else t[k].float()), config)
    assert (unrounded - expected).abs().max() > 1e-3


@pytest.mark.parametrize("settings", [MemorySettings(), MemorySettings(force_fp32=True),
                                      MemorySettings(device="cpu", vram_mode=VramMode.NO, vram_budget_bytes=200_000)],
                         ids=["default-bf16", "fp32", "novram-200kB"])
def test_plain_fp8_file_stays_fp8_and_computes_as_the_upcast_model(files, settings):
    path, config = files["fp8"]
    manager = ModelManager(settings)
    model = load_diffusion_model_file(path, manager)
    module = model.module
    in_linears = linear_keys(config)
    with load_state_dict(path) as source:
        fp8_bytes = sum(source[k].numel() for k in in_linears)
    # the Linear weights are the file's own bytes (views of its mapping: not among the converted copies the
    # rebuilder owns), only the norm scales were converted
    owned = manager.record_of(model).weights.rebuilder.keys
    assert owned and not owned & in_linears
    resident = sum(p.numel() * p.element_size() for p in module.parameters())
    assert {p.dtype for n, p in module.named_parameters() if n in in_linears} == {FP8}
    assert fp8_bytes <= resident < 1.05 * fp8_bytes                   # the norm scales are a few hundred bytes
    manager.load_models_for([model])
    record = manager.record_of(model)
    if settings.vram_mode is VramMode.NO:
        assert record.placement.value == "partial" and manager.ledger.peak_bytes <= 200_000
    out = run(model, config)
    dtype = module.compute_dtype
    assert out.dtype == dtype == (torch.float32 if settings.force_fp32 else torch.bfloat16)
    upcast = reference(path, config, lambda k, t: t[k].float())
    expected = run(upcast, config)
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    else:       # bf16: as far from the fp32 output as the upcast model computing in bf16 is
        own = (run(upcast.to(dtype), config).float() - expected).abs()
        err = (out.float() - expected).abs()
        assert err.mean() <= 1.2 * own.mean() and err.max() <= 1.5 * own.max()
    manager.free()


def test_weight_dtype_rounds_a_bf16_file_to_fp8(files):
    path, config = files["bf16"]
    manager = ModelManager(MemorySettings(force_fp32=True))
    model = load_diffusion_model_file(path, manager, weight_dtype="fp8_e4m3fn")
    in_linears = linear_keys(config)
    assert {p.dtype for n, p in model.module.named_parameters() if n in in_linears} == {FP8}
    expected = run(reference(path, config, lambda k, t: t[k].to(FP8).float() if k in in_linears else t[k].float()),
                   config)
    torch.testing.assert_close(run(model, config), expected, rtol=1e-5, atol=1e-5)
    default = load_diffusion_model_file(path, manager)
    assert default.module is not model.module and default.module.img_in.weight.dtype == torch.float32


def test_a_patch_on_a_scaled_fp8_weight_merges_into_its_true_value(files):
    """Model management merges a patch into weight * scale_weight (float32), holds it in the compute dtype and
    the layer uses it without scaling again; unloading puts the stored fp8 weight back."""
    path, config = files["scaled"]
    manager = ModelManager(MemorySettings(force_fp32=True))
    model = load_diffusion_model_file(path, manager)
    layer = model.module.img_in
    stored, scale = layer.weight.data, layer.scale_weight
    assert stored.dtype == FP8 and model.shared.weights.scales["img_in.weight"] == "img_in.scale_weight"
    delta = torch.randn(stored.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    patched = model.clone()
    patched.add_patches({"img_in.weight": lambda w: w + delta})
    manager.load_models_for([patched])
    expected = stored.float() * scale + delta
    assert layer.weight.dtype == torch.float32 and torch.equal(layer.weight.data, expected)
    x = torch.randn(3, config.in_channels)
    with torch.no_grad():
        torch.testing.assert_close(layer(x),
                                   x @ expected.T + layer.bias.float(), rtol=1e-5, atol=1e-5)
    manager.free()
    assert layer.weight.dtype == FP8 and layer.weight.data_ptr() == stored.data_ptr()


def test_values_written_are_the_random_ones(files):
    path, _ = files["fp8"]
    with load_state_dict(path) as source:
        w = source["img_in.weight"]
        assert torch.equal(w.float(), random_tensor("img_in.weight", tuple(w.shape), torch.float32, 2).to(FP8).float())


def sample(path, settings, *, placement=None):
    """KSampler (euler, 2 steps, cfg 1) on the FLUX file through model management: the latent."""
    from diffusion import ksampler
    from model_management import Placement
    manager = ModelManager(settings)
    model = load_diffusion_model_file(path, manager)
    c = model.module.config
    g = torch.Generator().manual_seed(5)
    cond = [[torch.randn(1, 5, c.context_in_dim, generator=g), {"pooled_output": torch.randn(1, c.vec_in_dim,
                                                                                              generator=g)}]]
    out = ksampler.ksample(model, {"samples": torch.zeros(1, 16, 8, 8)}, cond, cond, seed=1, steps=2, cfg=1.0,
                           sampler_name="euler", scheduler="simple")["samples"]
    record = manager.record_of(model)
    if placement is not None:
        assert record.placement is Placement(placement)
        assert settings.vram_budget_bytes is None or manager.ledger.peak_bytes <= settings.vram_budget_bytes
    manager.free()
    return out


def budget_for(path, share: float) -> int:
    """Working memory of the 8 x 8 sampling plus `share` of the model's device bytes (fp32 compute)."""
    from diffusion import ksampler
    from model_management.weights import ModuleWeights
    manager = ModelManager(MemorySettings(device="cpu", force_fp32=True))
    model = load_diffusion_model_file(path, manager)
    total = ModuleWeights(model.module).total_bytes(torch.float32)   # fp8 weights count as fp8 (cast per use)
    return ksampler.working_memory_bytes(model, (1, 16, 8, 8)) + int(share * total)


@pytest.mark.parametrize("which", ["fp8", "bf16", "scaled"])
@pytest.mark.parametrize("mode,share", [(VramMode.LOW, 0.5), (VramMode.NO, 0.6)], ids=["partial", "streamed"])
def test_partial_load_gives_the_full_loads_latent(files, which, mode, share):
    """The issue's 'the partial-load path must give the same image as a full load', on the CPU with a
    simulated device budget: half the blocks resident and the rest streamed per forward, or all streamed."""
    path, _ = files[which]
    full = sample(path, MemorySettings(device="cpu", force_fp32=True), placement="full")
    budget = budget_for(path, share)
    part = sample(path, MemorySettings(device="cpu", force_fp32=True, vram_mode=mode, vram_budget_bytes=budget),
                  placement="partial")
    assert torch.isfinite(full).all() and torch.equal(part, full)


def test_fp8_all_in_one_checkpoint_keeps_the_transformer_in_fp8(tmp_path):
    """flux1-dev-fp8's all-in-one layout (model.diffusion_model.* in fp8 e4m3fn, vae.*, text_encoders.*)
    through CheckpointLoaderSimple's loader: the transformer stays fp8 and computes as its upcast."""
    from diffusion import loading
    from models.testing import (flux_layout, flux_vae_config, module_layout, sd3_text_state, tiny_sd3_spec,
                                write_safetensors_streaming)
    from models.vae import AutoencoderKL
    config = tiny_flux_config()
    prefix = "model.diffusion_model."
    state = {k: random_tensor(k, s, torch.float32, 0).to(FP8) for k, s in flux_layout(config, prefix).items()}
    state.update({k: random_tensor(k, s, torch.float32, 0)
                  for k, s in module_layout(AutoencoderKL, flux_vae_config(), "vae.").items()})
    for kind, text_config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        state.update({f"text_encoders.{kind}.transformer.{k}": v
                      for k, v in sd3_text_state(kind, text_config, with_embed_tokens_copy=False).items()})
    path = tmp_path / "flux-fp8-aio.safetensors"
    write_safetensors_streaming(path, {k: (tuple(v.shape), v.dtype) for k, v in state.items()}, lambda n: state[n])
    model, clip, vae = loading.load_checkpoint_file(path, ModelManager(MemorySettings(force_fp32=True)))
    in_linears = linear_keys(config)
    assert {p.dtype for n, p in model.module.named_parameters() if n in in_linears} == {FP8}
    assert clip is not None and vae is not None
    upcast = reference_from({k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}, config)
    torch.testing.assert_close(run(model, config), run(upcast, config), rtol=1e-5, atol=1e-5)


def reference_from(state, config) -> Flux:
    module = Flux(config).eval()
    module.load_state_dict(state)
    return module


def test_fp8_blocks_drop_their_file_pages_after_running(files, monkeypatch):
    """Each double / single block releases the file pages of its weights once it has run (peak RSS: one block
    of file pages, not the whole 11.9 GB file); only file views are released, and the output is unchanged."""
    import models.flux_checkpoint as flux_checkpoint
    from models.files import release_file_pages
    path, config = files["fp8"]
    model = load_diffusion_model_file(path, ModelManager(MemorySettings(force_fp32=True)))
    before = run(model, config)
    released = []
    monkeypatch.setattr(flux_checkpoint, "release_file_pages",
                        lambda tensors: released.append(release_file_pages(tensors)) or released[-1])
    again = run(model, config)
    assert torch.equal(again, before)
    blocks = [*model.module.double_blocks, *model.module.single_blocks]
    assert len(released) == len(blocks)
    fp8_bytes = [sum(p.numel() for p in b.parameters() if p.dtype == FP8) for b in blocks]
    assert released == fp8_bytes                       # the blocks' fp8 views; their bf16/fp32 norm scales kept


def test_schnell_samples_plain_flow_as_comfyuis_flux_schnell(files):
    """ComfyUI's FluxSchnell is model type FLOW (ModelSamplingDiscreteFlow, shift 1.0, multiplier 1.0): sigma =
    t over a table of 1,000 (i / 1000), the model's timestep = sigma. 'simple' at 3 steps therefore takes the
    table's entries 1000, 667, 334 (in 1/1000) then 0. [dev] keeps FLUX's exponential shift 1.15. (This, not
    the fp8 weights, was the schnell fidelity case's max 66 / mean 10.35: the exponential shift with mu = 1
    gave the sigmas 1, 0.845, 0.577.)"""
    from diffusion.ksampler import sigmas_for
    from sampling.flux import FluxSampling
    schnell = load_diffusion_model_file(files["scaled"][0], ModelManager(MemorySettings(force_fp32=True)))
    sigmas = sigmas_for(schnell, "simple", 3)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.667, 0.334, 0.0]), rtol=0, atol=1e-6)
    ms = schnell.model_sampling
    assert len(ms.sigmas) == 1000 and torch.equal(ms.timestep(torch.tensor([0.5])), torch.tensor([0.5]))
    dev = load_diffusion_model_file(files["fp8"][0], ModelManager(MemorySettings(force_fp32=True)))
    assert isinstance(dev.model_sampling, FluxSampling) and dev.model_sampling.shift == 1.15


def test_flux_clip_encodes_again_after_a_ram_budget_drop(tmp_path, files):
    """Beside a FLUX model bigger than the RAM budget the DualCLIPLoader CLIP is dropped; a new text must
    still encode (it reloads from its files; before it failed with ModelDroppedError in bench/compare.py's
    full-size FLUX run), to the same conditioning."""
    from diffusion.flux import encode, load_text_encoder_files
    from models.testing import tiny_sd3_spec, write_random_text_encoder
    paths = []
    for kind, config in tiny_sd3_spec(text=("clip_l", "t5xxl")).text_configs.items():
        paths.append(write_random_text_encoder(tmp_path / f"{kind}.safetensors", kind, config,
                                               FP8 if kind == "t5xxl" else torch.float16))
    manager = ModelManager(MemorySettings(force_fp32=True, ram_budget_bytes=1))
    clip = load_text_encoder_files(paths, manager)
    before = encode(clip, "a lighthouse", "a lighthouse")
    load_diffusion_model_file(files["fp8"][0], manager)            # over the budget: the CLIP is dropped
    assert manager.record_of(clip) is None or manager.record_of(clip).placement.value == "dropped"
    after = encode(clip, "a lighthouse", "a lighthouse")
    assert torch.equal(after[0][0], before[0][0])
    assert torch.equal(after[0][1]["pooled_output"], before[0][1]["pooled_output"])
