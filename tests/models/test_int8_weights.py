"""int8 weights with dynamically quantised activations (models/int8_weights.py, `--int8-unet`).

References are independent of the module: float64 products of the float weights and inputs, the error bound
from the rounding formula (each quantised value is within half a step of the true one), and the exact product
of the quantised values (which oneDNN's int32 sums must reproduce up to the output's rounding)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from diffusion import conditioning, ksampler, loading
from model_management import MemorySettings, ModelManager
from models.int8_weights import (Int8Conv2d, Int8Linear, is_int8_available, quantize_per_tensor_uint8,
                                 quantize_per_token, quantize_weight, store_weights_in_int8)
from models.lora import apply_lora, module_weight_shapes
from models.testing import tiny_unet_config
from models.unet import UNetModel
from tests.diffusion.helpers import write_tiny
from tests.lora import makers

pytestmark = pytest.mark.skipif(not is_int8_available(), reason="needs PyTorch's oneDNN int8 kernels (x86)")


def test_weight_quantisation_is_per_output_channel_within_half_a_step():
    w = torch.randn(48, 20, 3, 3) * torch.logspace(-3, 0, 48).view(-1, 1, 1, 1)
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (48, 1, 1, 1) and scale.dtype == torch.float32
    assert torch.equal(q.abs().flatten(1).amax(1), torch.full((48,), 127, dtype=torch.int8))
    err = (q.double() * scale.double() - w.double()).abs()
    assert (err <= scale.double() / 2 * (1 + 1e-6)).all()


def test_activation_quantisation_leaves_its_input_alone():
    x = torch.randn(6, 32)
    before = x.clone()
    q, s = quantize_per_token(x)
    assert torch.equal(x, before) and q.dtype == torch.int8 and s.shape == (6, 1)
    assert ((q.double() * s.double() - x.double()).abs() <= s.double() / 2 * (1 + 1e-6)).all()
    u, scale, zero = quantize_per_tensor_uint8(x)
    assert torch.equal(x, before) and u.dtype == torch.uint8
    assert (((u.double() - zero) * scale - x.double()).abs() <= scale / 2 * (1 + 1e-6) + 1e-7).all()


def _linear_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_k |x_k| sw/2 + |w_k| sx/2 + sx sw/4, per output element (float64)."""
    x2 = x.double().reshape(-1, x.shape[-1])
    sx = x2.abs().amax(1, keepdim=True) / 127
    sw = w.double().abs().amax(1) / 127
    k = x.shape[-1]
    bound = x2.abs().sum(1, keepdim=True) * sw / 2 + sx * w.double().abs().sum(1) / 2 + k * sx * sw / 4
    return bound.reshape(*x.shape[:-1], w.shape[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_is_within_the_rounding_bound_of_the_float_product(dtype):
    torch.manual_seed(1)
    layer = nn.Linear(96, 40)
    x = torch.randn(2, 77, 96) * torch.linspace(0.1, 3, 77).view(1, -1, 1)     # rows of different ranges
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    exact = F.linear(x.double(), w.double(), b.double())
    Int8Linear.convert(layer)
    assert layer.weight.dtype == torch.int8 and layer.weight_scale.shape == (40, 1)
    layer.bias.data = layer.bias.data.to(dtype)
    with torch.no_grad():
        y = layer(x.to(dtype))
    assert y.dtype == dtype and y.shape == (2, 77, 40)
    bound = _linear_bound(x.to(dtype), w)
    # the output's own rounding: fp32 ~1e-6, bf16 three roundings of 2^-9 (product, row scale, bias)
    eps = 1e-5 if dtype == torch.float32 else 3 * 2.0 ** -8
    err = (y.double() - exact).abs()
    assert (err <= bound + eps * exact.abs() + eps * 0.1).all()
    assert err.max() > 0                       # it did quantise
    assert err.mean() < 0.05 * exact.abs().mean()


def test_linear_computes_the_exact_product_of_the_quantised_values():
    torch.manual_seed(2)
    layer = nn.Linear(64, 24, bias=False)
    x = torch.randn(33, 64)
    Int8Linear.convert(layer)
    xq, sx = quantize_per_token(x)
    expected = (xq.double() @ layer.weight.double().t()) * sx.double() * layer.weight_scale.double().view(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_is_within_the_rounding_bound_of_the_float_convolution(stride, padding, dtype):
    torch.manual_seed(3)
    conv = nn.Conv2d(16, 24, 3, stride=stride, padding=padding)
    x = torch.randn(2, 16, 12, 12).relu() * 2 - 0.3        # skewed, as after a SiLU: the asymmetric range pays
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    exact = F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=padding)
    Int8Conv2d.convert(conv)
    conv.bias.data = conv.bias.data.to(dtype)
    with torch.no_grad():
        y = conv(x.to(dtype))
    assert y.dtype == dtype and y.shape == exact.shape
    # per tensor: |x - x^| <= sx/2 (zero is exact, so the padding is too); per channel |w - w^| <= sw/2
    xs = x.to(dtype).double()
    sx = (float(xs.max()) - min(float(xs.min()), 0.0)) / 255
    sw = w.double().abs().flatten(1).amax(1) / 127
    inside = F.pad(torch.ones_like(xs), (padding,) * 4)        # 1 where the window sees the input
    args = {"stride": stride}
    bound = (F.conv2d(F.pad(xs.abs(), (padding,) * 4), torch.ones_like(w.double()), **args) * sw.view(1, -1, 1, 1) / 2
             + F.conv2d(inside, w.double().abs(), **args) * sx / 2
             + F.conv2d(inside, torch.ones_like(w.double()), **args) * sx * sw.view(1, -1, 1, 1) / 4)
    eps = 1e-5 if dtype == torch.float32 else 2 * 2.0 ** -8
    err = (y.double() - exact).abs()
    assert (err <= bound + eps * exact.abs() + 1e-6).all()
    assert err.max() > 0 and err.mean() < 0.05 * exact.abs().mean()


def test_a_patched_weight_runs_as_its_float_value():
    layer = nn.Linear(8, 4)
    Int8Linear.convert(layer)
    true = (layer.weight.float() * layer.weight_scale).clone() + 0.25
    layer.weight.data = true
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, true, layer.bias))


def test_store_weights_in_int8_converts_linears_and_convs_and_halves_their_bytes():
    torch.manual_seed(4)
    unet = UNetModel(tiny_unet_config("sd1")).eval()
    x, t, context = torch.randn(2, 4, 16, 16), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 32)
    with torch.no_grad():
        reference = unet(x, t, context).double()
    layers = [m for m in unet.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    float_bytes = sum(m.weight.numel() * 2 for m in layers)                 # as bf16
    count = store_weights_in_int8(unet, torch.float32)
    assert count == len(layers) and unet.compute_dtype == torch.float32
    assert all(type(m) in (Int8Linear, Int8Conv2d) and m.weight.dtype == torch.int8 for m in layers)
    assert sum(m.weight.numel() for m in layers) * 2 == float_bytes        # 1 byte each
    with torch.no_grad():
        out = unet(x, t, context).double()
    rel = (out - reference).norm() / reference.norm()
    assert 0 < rel < 0.05


SAMPLE = {"seed": 3, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("int8") / "tiny.safetensors")


def _sample(model, clip):
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    return ksampler.ksample(model, {"samples": torch.zeros(1, 4, 8, 8)}, positive, negative, **SAMPLE)["samples"]


def test_int8_unet_setting_samples_close_to_the_float_model(tiny_checkpoint):
    plain, clip, _ = loading.load_checkpoint_file(tiny_checkpoint, ModelManager(MemorySettings(force_fp32=True,
                                                                                               device="cpu")))
    manager = ModelManager(MemorySettings(force_fp32=True, device="cpu", int8_unet=True))
    model, clip8, _ = loading.load_checkpoint_file(tiny_checkpoint, manager)
    assert isinstance(model.module.input_blocks[0][0], Int8Conv2d)
    assert model.module.input_blocks[0][0].weight.dtype == torch.int8
    expected, out = _sample(plain, clip), _sample(model, clip8)
    assert model.module.input_blocks[0][0].weight_scale.dtype == torch.float32     # the scale kept as stored
    # the random tiny UNet amplifies every rounding (its latents reach norms of ~1,500 in 4 steps): bf16 weights
    # land 3.2% from the fp32 run here, int8 8.0% (fp32 activations) / 8.6% (bf16)
    rel = float((out - expected).norm() / expected.norm())
    assert 0 < rel < 0.15
    assert isinstance(plain.module.input_blocks[0][0], nn.Conv2d) and \
        not isinstance(plain.module.input_blocks[0][0], Int8Conv2d)


def test_a_lora_patches_the_dequantised_weight_and_comes_off_to_the_int8_weight(tiny_checkpoint):
    manager = ModelManager(MemorySettings(force_fp32=True, device="cpu", int8_unet=True))
    model, _, _ = loading.load_checkpoint_file(tiny_checkpoint, manager)
    unet = model.module
    key_conv, key_lin = "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    names = {"lora_unet_down_blocks_0_resnets_0_conv1": key_conv,
             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": key_lin}
    shapes = module_weight_shapes(unet)
    lora = makers.kohya_lora({n: shapes[k] for n, k in names.items()}, rank=2, alpha=1.0)
    base = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    patched, _, report = apply_lora(model, None, lora, 0.8, 0.0, "test.safetensors")
    assert report.unmatched == []
    manager.load_models_for([patched])
    state = unet.state_dict()
    for name, key in names.items():
        scale = base[key.removesuffix("weight") + "weight_scale"].double()
        expected = base[key].double() * scale + 0.8 * makers.expected_delta_lora(lora, name, shapes[key])
        assert state[key].dtype == torch.float32                    # the true patched value, not re-quantised
        torch.testing.assert_close(state[key].double(), expected, atol=1e-5, rtol=1e-5)
    conv = unet.input_blocks[1][0].in_layers[2]
    with torch.no_grad():
        h = torch.randn(1, conv.in_channels, 8, 8)
        torch.testing.assert_close(conv(h), F.conv2d(h, state[key_conv], conv.bias, padding=1))
    manager.unload(patched)
    manager.load_models_for([model])
    after = unet.state_dict()
    for key in names.values():
        assert after[key].dtype == torch.int8 and torch.equal(after[key], base[key])


def test_main_flag_sets_the_setting():
    assert main.memory_settings(main.parse_args(["--int8-unet"])).int8_unet is True
    assert main.memory_settings(main.parse_args([])).int8_unet is False


def test_unet_loader_files_sdxl_included_are_converted_but_fp8_ones_stay_fp8(tmp_path):
    """UNETLoader's path: an SDXL UNet alone is converted; with weight_dtype fp8 the fp8 weights are kept."""
    from safetensors.torch import load_file, save_file

    from models.testing import tiny_sdxl_text_configs, tiny_sdxl_unet_config, tiny_vae_config, write_sdxl_checkpoint
    full = load_file(str(write_sdxl_checkpoint(tmp_path / "xl.safetensors", tiny_sdxl_unet_config(),
                                               text=tiny_sdxl_text_configs(), vae=tiny_vae_config())))
    prefix = "model.diffusion_model."
    save_file({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}, str(tmp_path / "unet.safetensors"))
    settings = MemorySettings(device="cpu", int8_unet=True)
    model = loading.load_unet_file(tmp_path / "unet.safetensors", ModelManager(settings))
    layers = [m for m in model.module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers and all(type(m) in (Int8Linear, Int8Conv2d) for m in layers)
    y = torch.randn(1, tiny_sdxl_unet_config().adm_in_channels)
    with torch.no_grad():
        out = model.module(torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 77, 64), y)
    assert torch.isfinite(out).all()
    fp8 = loading.load_unet_file(tmp_path / "unet.safetensors", ModelManager(settings), weight_dtype="fp8_e4m3fn")
    assert not any(isinstance(m, (Int8Linear, Int8Conv2d)) for m in fp8.module.modules())


def test_a_saved_int8_model_holds_its_true_weights_in_fp16(tiny_checkpoint, tmp_path):
    """int8 weights have no file format: ModelSave writes their true values (weight * scale, LoRA merged) in fp16,
    without the scales and without a `scaled_fp8` marker, so the file loads as a plain model."""
    from diffusion import saving_parts
    from models.files import load_state_dict
    manager = ModelManager(MemorySettings(force_fp32=True, device="cpu", int8_unet=True))
    model, _, _ = loading.load_checkpoint_file(tiny_checkpoint, manager)
    key = "input_blocks.1.0.in_layers.2.weight"
    base = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    path = saving_parts.save_model(tmp_path / "int8-saved.safetensors", model)
    with load_state_dict(path) as saved:
        names = set(saved.keys())
        assert not any(n.endswith("weight_scale") or n.endswith("scaled_fp8") for n in names)
        stored = saved["model.diffusion_model." + key]
        assert stored.dtype == torch.float16
        true = base[key].float() * base[key.removesuffix("weight") + "weight_scale"]
        torch.testing.assert_close(stored.float(), true.half().float(), atol=0, rtol=0)
