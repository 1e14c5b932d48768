"""LoraSave: SVD factors against NumPy, and extracted files that Plexus's own LoRA loader applies to get
back the first model (full_diff exactly up to fp16; standard as the clamped truncated SVD)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusion import conditioning, lora_extract, merging
from model_management import apply_patches
from models.lora.apply import apply_lora
from models.lora.extract import extract_lora
from tests.diffusion.test_merging import two  # noqa: F401 - fixture


def _truncated(matrix: np.ndarray, rank: int) -> np.ndarray:
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


@pytest.mark.parametrize("shape", [(12, 10), (8, 6, 3, 3), (8, 6, 1, 1)])
def test_factors_are_the_truncated_svd_clamped_at_the_quantile(shape) -> None:
    diff = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    up, down = extract_lora(diff, 4, clamp_quantile=None)               # no clamping: Eckart-Young
    assert up.shape[:2] == (shape[0], 4) and down.shape[:2] == (4, shape[1])
    assert up.ndim == diff.ndim and down.shape[2:] == diff.shape[2:]
    product = (up.flatten(1) @ down.flatten(1)).numpy()
    np.testing.assert_allclose(product, _truncated(diff.flatten(1).double().numpy(), 4), rtol=1e-4, atol=1e-4)
    up_c, down_c = extract_lora(diff, 4)
    values = torch.cat([up.flatten(), down.flatten()])
    bound = float(torch.quantile(values, 0.99))
    assert float(torch.cat([up_c.flatten(), down_c.flatten()]).abs().max()) <= bound + 1e-6
    torch.testing.assert_close(up_c, up.clamp(-bound, bound))


def test_rank_is_capped_by_the_smaller_side() -> None:
    up, down = extract_lora(torch.randn(3, 20), 8)
    assert up.shape == (3, 3) and down.shape == (3, 20)


def _weight(handle, key):
    w = handle.shared.weights.home[key]
    return (apply_patches(w, handle.patches[key], key) if key in handle.patches else w).float()


def test_full_diff_lora_of_a_subtraction_turns_model2_into_model1(two, tmp_path):
    _, ((m1, c1, _), (m2, c2, _)) = two
    path = lora_extract.extract_lora_file(tmp_path / "d.safetensors", merging.merge_subtract(m1, m2, 1.0),
                                          merging.merge_subtract(c1, c2, 1.0, is_clip=True), lora_type="full_diff")
    lora = load_file(str(path))
    assert any(k.startswith("diffusion_model.input_blocks.") and k.endswith(".diff") for k in lora)
    assert any(k.startswith("text_encoders.clip_l.transformer.text_model.") for k in lora)
    model, clip, report = apply_lora(m2, c2, lora, 1.0, 1.0, "d.safetensors")
    assert not report.unmatched
    for key in list(m1.shared.weights.slots)[::7]:
        torch.testing.assert_close(_weight(model, key), m1.shared.weights.home[key].float(), rtol=2e-3, atol=2e-3)
    enc = lambda c: conditioning.encode_text(c, "a cat")[0][0]
    torch.testing.assert_close(enc(clip), enc(c1), rtol=1e-2, atol=1e-2)


def test_standard_lora_patches_each_matrix_by_its_factors(two, tmp_path):
    _, ((m1, _, _), (m2, _, _)) = two
    diff = merging.merge_subtract(m1, m2, 1.0)
    path = lora_extract.extract_lora_file(tmp_path / "s.safetensors", diff, rank=4)
    lora = load_file(str(path))
    key = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    up, down = (lora[f"diffusion_model.{key[:-7]}.lora_{p}.weight"] for p in ("up", "down"))
    assert up.dtype == torch.float16 and up.shape[1] == 4
    assert f"diffusion_model.{key[:-7]}.diff_b" not in lora                   # to_q has no bias
    assert "diffusion_model.out.0.diff" in lora and "diffusion_model.out.0.diff_b" in lora   # the GroupNorm
    model, _, report = apply_lora(m2, None, lora, 1.0, 0.0, "s.safetensors")
    assert not report.unmatched
    expected = m2.shared.weights.home[key].float() + up.float() @ down.float()
    torch.testing.assert_close(_weight(model, key), expected, rtol=1e-3, atol=1e-3)
    best = _truncated(_weight(diff, key).double().numpy(), 4)            # the 0.99-quantile clamp: ~12% here
    assert np.linalg.norm((up.float() @ down.float()).numpy() - best) < 0.2 * np.linalg.norm(best)


def test_nothing_is_written_without_a_difference(tmp_path):
    assert lora_extract.extract_lora_file(tmp_path / "x.safetensors") is None
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(ValueError, match="lora_type"):
        lora_extract.extract_lora_file(tmp_path / "x.safetensors", object(), lora_type="lokr")
