"""The patch API through the engine on a tiny SD1.5 checkpoint: KSampler with FreeU, with an identity
block patch (same latent as unpatched), and with a ComfyUI-shaped post-CFG function that re-runs the model."""
from __future__ import annotations

import torch

from diffusion import conditioning, freeu, ksampler, loading
from model_management import MemorySettings, ModelManager

SAMPLE_ARGS = {"seed": 5, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}


def _run(model, clip):
    positive, negative = conditioning.encode_text(clip, "a cat"), conditioning.encode_text(clip, "a dog")
    return ksampler.ksample(model, {"samples": torch.zeros(1, 4, 8, 8)}, positive, negative, **SAMPLE_ARGS)["samples"]


def test_patches_through_ksampler(tiny_sd15):
    model, clip, _ = loading.load_checkpoint_file(tiny_sd15, ModelManager(MemorySettings(force_fp32=True)))
    plain = _run(model, clip)

    seen = []
    identity = model.clone()
    identity.set_model_output_block_patch(lambda h, skip, to: (seen.append(to["cond_or_uncond"]) or h, skip))
    torch.testing.assert_close(_run(identity, clip), plain, rtol=1e-5, atol=1e-5)
    assert seen and all(sorted(c) == [0, 1] for c in seen)          # the CFG pair batched, tagged
    assert "transformer_options" not in model.options                # the parent clone is untouched

    patched = freeu.with_freeu(model, 1.5, 1.6, 0.5, 0.5)
    assert not torch.allclose(_run(patched, clip), plain)

    calls = []

    def post(args):
        (again,) = args["calc_cond_batch"]([args["cond"]], args["input"], args["sigma"], args["model_options"])
        calls.append(again)
        torch.testing.assert_close(again, args["cond_denoised"], rtol=1e-4, atol=1e-4)
        return args["denoised"]
    guided = model.clone()
    guided.set_model_sampler_post_cfg_function(post)
    torch.testing.assert_close(_run(guided, clip), plain, rtol=1e-5, atol=1e-5)
    assert len(calls) == SAMPLE_ARGS["steps"]
