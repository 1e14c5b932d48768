"""The sampler runs the UNet on prepacked convolution weights on the CPU (diffusion/prepacking.py): the same
images as without, the weights (patched or not) as they were afterwards, and a model whose weights could
not be put back is dropped and loaded again."""
from __future__ import annotations

import pytest
import torch

from diffusion import conditioning, ksampler, loading
from diffusion.prepacking import is_prepacking
from model_management import MemorySettings, ModelManager
from model_management.registry import Placement
from models import prepack
from models.prepack import PackedConvolution
from models.testing import CheckpointSpec, tiny_unet_config, write_random_checkpoint
from tests.diffusion.helpers import TINY_VAE

pytestmark = pytest.mark.skipif(not prepack.is_packing_available(torch.float32), reason="PyTorch built without oneDNN")

SAMPLE_ARGS = {"seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


@pytest.fixture(scope="module")
def tiny_fp16(tmp_path_factory):
    """Stored in fp16, computed in fp32: the loader converts, so the weights are the model's own."""
    spec = CheckpointSpec("sd1", tiny_unet_config("sd1", 4), TINY_VAE, dtype=torch.float16)
    return write_random_checkpoint(tmp_path_factory.mktemp("prepack") / "tiny-fp16.safetensors", spec)


def load(path, **settings):
    manager = ModelManager(MemorySettings(force_fp32=True, **settings))
    model, clip, _ = loading.load_checkpoint_file(path, manager)
    return model, clip


def sample(model, clip, **overrides) -> torch.Tensor:
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksampler.ksample(model, latent, positive, negative, **{**SAMPLE_ARGS, **overrides})["samples"]


def assert_same_to_fp32_reordering(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The packed kernel sums in another order: fp32 rounding, grown through two steps at cfg 5 (the
    largest difference measured is 3e-6 of the largest value)."""
    assert (got - expected).abs().max() <= 5e-5 * expected.abs().max()


def conv_weights(model) -> dict[str, torch.Tensor]:
    return {name: m.weight.clone() for name, m in model.module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def spying(model, seen: list):
    """A clone that records, at each UNet call, how many convolutions run on packed weights."""
    twin = model.clone()

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], args["c"])
        seen.append(sum(isinstance(m.forward, PackedConvolution) and m.forward.packed is not None
                        for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)))
        return out
    twin.set_model_unet_function_wrapper(wrapper)
    return twin


@pytest.mark.parametrize("checkpoint", ["tiny_fp16", "tiny_sd15"])
def test_sampling_on_packed_weights_gives_the_same_latents(checkpoint, request):
    """fp16 on disk: the model's own converted weights; fp32 on disk: views into the mapped file."""
    path = request.getfixturevalue(checkpoint)
    plain_model, clip = load(path, prepack_weights=False)
    expected = sample(plain_model, clip)
    model, clip = load(path)
    before = conv_weights(model)
    seen: list[int] = []
    got = sample(spying(model, seen), clip)
    # every step ran on packed weights: every convolution called through forward() (SD1's 1x1 transformer
    # projections run as F.linear on their weight)
    called = sum(isinstance(m, torch.nn.Conv2d) for m in model.module.modules()) - \
        2 * sum(hasattr(m, "proj_in") for m in model.module.modules())
    assert seen and all(n == called for n in seen)
    assert_same_to_fp32_reordering(got, expected)
    assert got.is_contiguous()                                   # a LATENT leaves in PyTorch's plain layout
    after = conv_weights(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all("forward" not in m.__dict__ for m in model.module.modules())
    seen.clear()
    sample(spying(plain_model, seen), clip)
    assert seen and not any(seen)                                # --disable-weight-prepack


def test_patched_weights_are_packed_and_the_base_comes_back(tiny_fp16):
    model, clip = load(tiny_fp16)
    key = "input_blocks.1.0.in_layers.2.weight"                 # a 3x3 convolution
    base = conv_weights(model)
    unpatched = sample(model, clip)
    twin = model.clone()
    twin.add_patches({key: lambda w: w * 1.5})
    patched = sample(twin, clip)
    assert not torch.allclose(patched, unpatched)
    reference, reference_clip = load(tiny_fp16, prepack_weights=False)
    reference_twin = reference.clone()
    reference_twin.add_patches({key: lambda w: w * 1.5})
    assert_same_to_fp32_reordering(patched, sample(reference_twin, reference_clip))
    torch.testing.assert_close(sample(model, clip), unpatched, rtol=0, atol=0)
    after = conv_weights(model)
    assert all(torch.equal(after[k], base[k]) for k in base)


def test_a_weight_that_cannot_be_put_back_drops_the_model(tiny_fp16, monkeypatch):
    model, clip = load(tiny_fp16)
    expected = sample(model, clip)
    manager = model.manager

    def fail(self):
        raise MemoryError("no memory to grow the storage (simulated)")
    with monkeypatch.context() as patch:
        patch.setattr(PackedConvolution, "unpack", fail)
        with pytest.raises(prepack.UnpackError):
            sample(model, clip)
    assert manager.record_of(model) is None or manager.record_of(model).placement.value == "dropped"
    again, clip = loading.load_checkpoint_file(tiny_fp16, manager)[:2]
    torch.testing.assert_close(sample(again, clip), expected, rtol=0, atol=0)


def test_only_an_eager_fully_loaded_cpu_model_is_prepacked(tiny_fp16, monkeypatch):
    model, _ = load(tiny_fp16)
    model.manager.load_models_for([model], 0)
    assert is_prepacking(model, model.module)
    assert not is_prepacking(model, object())                   # a compiled forward
    monkeypatch.setattr(model.manager.record_of(model), "placement", Placement.PARTIAL)
    assert not is_prepacking(model, model.module)               # streamed weights are not the model's own
    disabled, _ = load(tiny_fp16, prepack_weights=False)
    disabled.manager.load_models_for([disabled], 0)
    assert not is_prepacking(disabled, disabled.module)
