"""CheckpointSave's writer: the file it writes has the original single-file layout of the family (SD1
and SD2, whose OpenCLIP text encoder is converted back) and loads again to the same weights, with
LoRA-style patches merged in."""
from __future__ import annotations

import pytest
import torch

from diffusion import loading, saving
from model_management import MemorySettings, ModelManager
from models.checkpoint import load_checkpoint
from models.files import load_state_dict
from models.testing import CheckpointSpec, tiny_unet_config, tiny_vae_config, write_random_checkpoint
from tests.diffusion.helpers import write_tiny


def state(module) -> dict[str, torch.Tensor]:
    return module.state_dict()


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_saved_checkpoint_has_the_original_layout_and_loads_back(tmp_path, family):
    source = write_tiny(tmp_path / f"{family}.safetensors", family=family)
    manager = ModelManager(MemorySettings(force_fp32=True))
    model, clip, vae = loading.load_checkpoint_file(source, manager)
    out = saving.save_checkpoint(tmp_path / "out.safetensors", model, clip, vae, prompt={"1": {}})

    with load_state_dict(source) as original, load_state_dict(out) as saved:
        written = set(saved.keys())
        expected = {k for k in original.keys() if k.startswith(("model.diffusion_model.", "cond_stage_model.",
                                                                  "first_stage_model."))}
        expected -= {"cond_stage_model.transformer.text_model.embeddings.position_ids"}   # a buffer, not a weight
        assert written - {"cond_stage_model.model.logit_scale"} == expected - {"cond_stage_model.model.logit_scale"}
        for key in expected & written:
            if key.endswith("logit_scale"):
                continue                      # CLIP's temperature: unused by SD, written with its initial value
            assert torch.equal(original[key], saved[key]), key

    before, after = load_checkpoint(source), load_checkpoint(out)
    for a, b in ((before.unet, after.unet), (before.vae, after.vae), (before.text_encoders[0], after.text_encoders[0])):
        sa, sb = state(a), state(b)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_patches_are_merged_into_the_saved_file(tmp_path):
    source = write_tiny(tmp_path / "sd2.safetensors", family="sd2")
    manager = ModelManager(MemorySettings(force_fp32=True))
    model, clip, vae = loading.load_checkpoint_file(source, manager)
    key = next(k for k in clip.shared.weights.slots if k.endswith("self_attn.q_proj.weight"))
    patched = clip.clone()
    patched.add_patches({key: lambda w: w + 1.0}, strength=0.5)
    out = saving.save_checkpoint(tmp_path / "out.safetensors", model, patched, vae)
    layer = key.split(".layers.")[1].split(".")[0]
    with load_state_dict(source) as original, load_state_dict(out) as saved:
        name = f"cond_stage_model.model.transformer.resblocks.{layer}.attn.in_proj_weight"
        width = original[name].shape[1]
        assert torch.allclose(saved[name][:width], original[name][:width] + 0.5)      # q rows patched
        assert torch.equal(saved[name][width:], original[name][width:])              # k, v untouched


def test_saving_after_another_clone_merged_its_patches_in_place(tmp_path):
    """On the CPU a fp16 file loads as converted tensors that patches are merged into in place: saving the
    plain model right after a patched clone was loaded must still write the base weights."""
    spec = CheckpointSpec("sd1", tiny_unet_config("sd1"), tiny_vae_config(), dtype=torch.float16)
    source = write_random_checkpoint(tmp_path / "half.safetensors", spec)
    manager = ModelManager(MemorySettings(device="cpu", bf16_unet=True))
    model, clip, vae = loading.load_checkpoint_file(source, manager)
    key = "input_blocks.1.1.proj_in.weight"
    base = model.shared.weights.home[key].clone()
    patched = model.clone()
    patched.add_patches({key: lambda w: w + 1.0})
    manager.load_models_for([patched])
    assert manager.record_of(model).patched_in_place == {key}
    out = saving.save_checkpoint(tmp_path / "out.safetensors", model, clip, vae)
    with load_state_dict(out) as saved:
        assert torch.equal(saved["model.diffusion_model." + key], base)
