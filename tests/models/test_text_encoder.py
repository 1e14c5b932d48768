"""Text encoders against independent implementations, on tiny random-weight models in the real layouts.

References:
- transformers' CLIPTextModel / CLIPTextModelWithProjection, loaded with the same weights (the OpenCLIP
  layout converted by a conversion written here, independently of models/text/convert.py);
- for the OpenCLIP layout also a reference written here on `nn.MultiheadAttention`, which consumes the
  fused `in_proj_weight` as stored, with no key conversion at all.
Tolerance: max abs error 1e-4 in fp32.
"""
from __future__ import annotations

import dataclasses
import functools
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import KeyMismatchError, UnknownModelError
from models.text import (
    ClipTextConfig,
    TextEncoder,
    load_text_encoder,
    random_text_encoder_state_dict,
    text_encoder_config_from_shapes,
)
from models.text.bpe import END_TOKEN, START_TOKEN

import transformers as transformers

ATOL = 1e-4
TINY = {
    "clip_l": ClipTextConfig.of_kind("clip_l", hidden_size=128, num_layers=3, num_heads=2, intermediate_size=256),
    "open_clip_h": ClipTextConfig.of_kind("open_clip_h", hidden_size=128, num_layers=3, num_heads=2,
                                          intermediate_size=256, projection_dim=96),
    # bigG (SDXL's second tower, SD3's clip_g): OpenCLIP layout as in SDXL checkpoints, HF layout as in clip_g files
    "open_clip_g": ClipTextConfig.of_kind("open_clip_g", hidden_size=128, num_layers=3, num_heads=2,
                                          intermediate_size=256, projection_dim=96),
    "clip_g": ClipTextConfig.of_kind("clip_g", hidden_size=128, num_layers=3, num_heads=2,
                                     intermediate_size=256, projection_dim=96),
}
OPEN_CLIP_KINDS = ("open_clip_h", "open_clip_g")
PROMPT = "a photo of a cat, (masterpiece:1.2), best quality"


@functools.cache
def tiny(kind: str) -> tuple[dict[str, torch.Tensor], TextEncoder]:
    """(random weights in the real layout, the encoder loaded from them), built once per kind."""
    state_dict = random_text_encoder_state_dict(kind, TINY[kind], seed=1)
    return state_dict, load_text_encoder(kind, state_dict)


@pytest.fixture(scope="module", params=sorted(TINY))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def state_dict(kind: str) -> dict[str, torch.Tensor]:
    return tiny(kind)[0]


@pytest.fixture(scope="module")
def encoder(kind: str) -> TextEncoder:
    return tiny(kind)[1]


@pytest.fixture(scope="module")
def reference(kind: str, state_dict) -> nn.Module:
    return transformers_reference(kind, state_dict, TINY[kind])


# --- references ------------------------------------------------------------------------------------------

def open_clip_to_transformers(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP text keys -> transformers CLIPTextModelWithProjection keys (written for this test)."""
    out = {"embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "embeddings.position_embedding.weight": sd["positional_embedding"],
           "final_layer_norm.weight": sd["ln_final.weight"], "final_layer_norm.bias": sd["ln_final.bias"],
           "text_projection.weight": sd["text_projection"].T}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3)
        out.update({dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
                    dst + "self_attn.v_proj.weight": v, dst + "self_attn.q_proj.bias": qb,
                    dst + "self_attn.k_proj.bias": kb, dst + "self_attn.v_proj.bias": vb})
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = sd[f"{src}{a}.{p}"]
    return out


def transformers_reference(kind: str, sd: dict[str, torch.Tensor], config: ClipTextConfig) -> nn.Module:
    hf_config = transformers.CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        max_position_embeddings=config.max_positions, hidden_act=config.activation, layer_norm_eps=1e-5,
        projection_dim=config.projection_dim or config.hidden_size,
        bos_token_id=START_TOKEN, eos_token_id=END_TOKEN, pad_token_id=config.pad_token)
    if kind == "clip_l":
        model = transformers.CLIPTextModel(hf_config)
        weights = {k: v for k, v in sd.items() if k != "text_model.embeddings.position_ids"}
    elif kind == "clip_g":
        model = transformers.CLIPTextModelWithProjection(hf_config)
        weights = dict(sd)
    else:
        model = transformers.CLIPTextModelWithProjection(hf_config)
        weights = open_clip_to_transformers(sd, config.num_layers)
    wanted = set(model.state_dict())
    if not any(k.startswith("text_model.") for k in wanted):          # transformers 5.x has no text_model level
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    elif kind in OPEN_CLIP_KINDS:
        weights = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def run_transformers(model: nn.Module, ids: torch.Tensor, clip_skip: int,
                     norm_hidden: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (final_layer_norm(hidden state after layer `clip_skip`) (unnormalised if not `norm_hidden`),
    pooled [projected if the model has it])."""
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        norm = model.final_layer_norm if hasattr(model, "final_layer_norm") else model.text_model.final_layer_norm
        hidden = out.hidden_states[clip_skip]            # hidden_states[0] = embeddings, [-1] = last layer
        hidden = norm(hidden) if norm_hidden else hidden
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return hidden, pooled


class OpenClipReference(nn.Module):
    """OpenCLIP's text tower as its paper/code describe it, on the stored keys (nn.MultiheadAttention)."""

    def __init__(self, sd: dict[str, torch.Tensor], layers: int, heads: int):
        super().__init__()
        self.sd, self.layers, self.heads = sd, layers, heads

    def forward(self, ids: torch.Tensor, stop_after: int) -> tuple[torch.Tensor, torch.Tensor]:
        sd, c = self.sd, self.sd["token_embedding.weight"].shape[1]
        x = F.embedding(ids, sd["token_embedding.weight"]) + sd["positional_embedding"]
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        taken = None
        for i in range(self.layers):
            p = f"transformer.resblocks.{i}."
            h = F.layer_norm(x, (c,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
            attn, _ = F.multi_head_attention_forward(
                h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), c, self.heads,
                sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], None, None, False, 0.0,
                sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"], training=False,
                need_weights=False, attn_mask=mask)
            x = x + attn.transpose(0, 1)
            h = F.layer_norm(x, (c,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
            x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                             sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
            if i == stop_after:
                taken = x
        ln = lambda t: F.layer_norm(t, (c,), sd["ln_final.weight"], sd["ln_final.bias"])
        final = ln(x)
        pooled = final[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]   # EOT = highest id
        return ln(taken), pooled


def chunk_ids(chunks) -> torch.Tensor:
    return torch.tensor([[t for t, _ in chunk] for chunk in chunks])


def unweighted(chunks):
    return [[(t, 1.0) for t, _ in chunk] for chunk in chunks]


# --- agreement with the references ---------------------------------------------------------------------

@pytest.mark.parametrize("clip_skip", [-1, -2, -3])
def test_hidden_states_and_pooled_match_transformers(kind, reference, encoder, clip_skip) -> None:
    chunks = unweighted(encoder.tokenize("a photo of a cat, best quality"))
    cond, pooled = encoder.encode(chunks, clip_skip=clip_skip)
    ref_hidden, ref_pooled = run_transformers(reference, chunk_ids(chunks), clip_skip,
                                              norm_hidden=TINY[kind].norm_hidden_state)
    assert cond.shape == (1, 77, 128) and cond.dtype == torch.float32
    assert (cond - ref_hidden).abs().max() < ATOL
    assert pooled.shape == (1, TINY[kind].pooled_dim)
    assert (pooled - ref_pooled).abs().max() < ATOL


def test_open_clip_layout_matches_a_multihead_attention_reference() -> None:
    state_dict, encoder = tiny("open_clip_h")
    reference = OpenClipReference(state_dict, layers=3, heads=2)
    chunks = unweighted(encoder.tokenize("a photo of a cat " * 20))     # 2 chunks, padded with 0
    ids = chunk_ids(chunks)
    cond, pooled = encoder.encode(chunks)                                # default: penultimate layer
    ref_hidden, ref_pooled = reference(ids, stop_after=1)
    assert encoder.default_clip_skip == -2
    assert (cond - ref_hidden.reshape(1, -1, 128)).abs().max() < ATOL
    assert (pooled - ref_pooled[:1]).abs().max() < ATOL                  # pooled from the first chunk


def test_default_clip_skip_and_padding_per_kind(kind, encoder) -> None:
    assert encoder.default_clip_skip == {"clip_l": -1, "open_clip_h": -2, "open_clip_g": -2, "clip_g": -2}[kind]
    (chunk,) = encoder.tokenize("cat")
    assert chunk[-1][0] == {"clip_l": END_TOKEN, "open_clip_h": 0, "open_clip_g": 0, "clip_g": 0}[kind]
    assert encoder.config.norm_hidden_state == (kind in ("clip_l", "open_clip_h"))
    assert torch.equal(encoder.encode("cat")[0], encoder.encode("cat", clip_skip=encoder.default_clip_skip)[0])


def test_a_clip_skip_beyond_the_depth_means_the_last_layer(encoder) -> None:
    assert torch.equal(encoder.encode("cat", clip_skip=-24)[0], encoder.encode("cat", clip_skip=-1)[0])


# --- weighting ------------------------------------------------------------------------------------------

def test_weights_follow_comfyui_formula(encoder) -> None:
    chunks = encoder.tokenize("a (photo:1.5) of a (cat:0.5), " + "dog " * 80)   # 2 chunks, some weighted
    cond, pooled = encoder.encode(chunks)
    plain, plain_pooled = encoder.encode(unweighted(chunks))
    empty, _ = encoder.encode([[(t, 1.0) for t in encoder.empty_chunk()]])
    weights = torch.tensor([w for chunk in chunks for _, w in chunk]).reshape(1, -1, 1)
    z_empty = empty.repeat(1, len(chunks), 1)
    expected = torch.where(weights == 1.0, plain, (plain - z_empty) * weights + z_empty)
    assert (weights != 1.0).sum() == 2
    assert torch.allclose(cond, expected, atol=1e-6, rtol=0)
    assert torch.equal(pooled, plain_pooled)                             # pooled ignores the weights


def test_weights_of_one_change_nothing(encoder) -> None:
    assert torch.equal(encoder.encode("(cat:1.0) photo")[0], encoder.encode("cat photo")[0])


def test_long_prompts_concatenate_independently_encoded_chunks(encoder) -> None:
    chunks = encoder.tokenize("cat " * 100)
    cond, pooled = encoder.encode(chunks)
    first, first_pooled = encoder.encode(chunks[:1])
    second, _ = encoder.encode(chunks[1:])
    assert cond.shape == (1, 154, 128)
    assert torch.allclose(cond, torch.cat([first, second], dim=1), atol=1e-6, rtol=0)
    assert torch.allclose(pooled, first_pooled, atol=1e-6, rtol=0)


# --- textual inversion --------------------------------------------------------------------------------

def test_an_embedding_replaces_token_vectors_exactly_at_its_positions(encoder) -> None:
    table = encoder.model.token_embedding.weight
    # vectors equal to the token rows of "photo of" must give exactly the encoding of the words
    as_words = lambda name: table[[1125, 539]].clone() if name == "same" else None
    assert torch.allclose(encoder.encode("a embedding:same a cat", embeddings=as_words)[0],
                          encoder.encode("a photo of a cat")[0], atol=1e-6, rtol=0)
    # other vectors: the same positions differ; earlier positions (causal attention) stay equal
    other = torch.randn(2, 128, generator=torch.Generator().manual_seed(3))
    cond, pooled = encoder.encode("a embedding:x a cat", embeddings=lambda name: other)
    base, base_pooled = encoder.encode("a photo of a cat")
    assert torch.equal(cond[0, :2], base[0, :2])
    assert (cond[0, 2:4] - base[0, 2:4]).abs().amax(-1).min() > 1e-3
    assert not torch.allclose(pooled, base_pooled)


def test_a_missing_embedding_warns_and_encodes_the_rest(encoder, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        cond, _ = encoder.encode("a embedding:missing_one cat", embeddings=lambda name: None)
    assert "missing_one" in caplog.text
    assert torch.equal(cond, encoder.encode("a cat")[0])


# --- loading ----------------------------------------------------------------------------------------------

def test_config_from_shapes_reads_the_tiny_sizes(kind, state_dict) -> None:
    config = text_encoder_config_from_shapes(kind, {k: tuple(v.shape) for k, v in state_dict.items()})
    assert config == TINY[kind]


def test_dtype_argument_and_module_behaviour(kind, state_dict, encoder) -> None:
    half = load_text_encoder(kind, state_dict, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and isinstance(half, nn.Module) and encoder.dtype == torch.float32
    assert not any(p.requires_grad for p in half.parameters())
    cond, pooled = half.encode("a cat")
    full_cond, full_pooled = encoder.encode("a cat")
    assert cond.dtype == pooled.dtype == torch.float32                  # outputs are float32, as in ComfyUI
    assert (cond - full_cond).abs().max() < 0.2 and (pooled - full_pooled).abs().max() < 0.2


def test_a_missing_or_extra_key_is_named(kind, state_dict) -> None:
    victim = min(k for k in state_dict if "layers.1." in k or "resblocks.1." in k)
    broken = {k: v for k, v in state_dict.items() if k != victim} | {"surprise.weight": torch.zeros(1)}
    with pytest.raises(KeyMismatchError) as info:
        load_text_encoder(kind, broken)
    assert "surprise.weight" in str(info.value)
    assert victim.split(".")[-1] in str(info.value) and info.value.extra_info["missing"]


def test_a_wrong_shape_is_named(kind, state_dict) -> None:
    key = next(k for k in state_dict if k.endswith(("fc1.bias", "c_fc.bias")))
    broken = dict(state_dict) | {key: torch.zeros(7)}
    with pytest.raises(KeyMismatchError, match="wrong shape"):
        load_text_encoder(kind, broken)


def test_the_wrong_layout_lists_what_was_found(state_dict, kind) -> None:
    other = "open_clip_h" if kind in ("clip_l", "clip_g") else "clip_l"
    with pytest.raises(UnknownModelError, match="found"):
        text_encoder_config_from_shapes(other, {k: tuple(v.shape) for k, v in state_dict.items()})


def test_old_sd1_files_without_the_text_model_level_load() -> None:
    state_dict, encoder = tiny("clip_l")
    old = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    assert torch.equal(load_text_encoder("clip_l", old).encode("a cat")[0], encoder.encode("a cat")[0])


def test_random_weights_are_seeded(kind) -> None:
    a = random_text_encoder_state_dict(kind, TINY[kind], seed=5)
    b = random_text_encoder_state_dict(kind, TINY[kind], seed=5)
    c = random_text_encoder_state_dict(kind, dataclasses.replace(TINY[kind]), seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a[next(iter(a))], c[next(iter(c))])


def test_an_hf_layout_projection_is_loaded_and_applied_to_pooled() -> None:
    """HF-layout towers with `text_projection.weight` [out, in] (SD3's clip_g style) project the pooled output."""
    state_dict, encoder = tiny("clip_l")
    projection = torch.randn(64, 128, generator=torch.Generator().manual_seed(4))
    projected = load_text_encoder("clip_l", state_dict | {"text_projection.weight": projection})
    assert projected.config.projection_dim == 64
    cond, pooled = projected.encode("a cat")
    base_cond, base_pooled = encoder.encode("a cat")
    assert torch.equal(cond, base_cond)
    assert torch.allclose(pooled, base_pooled @ projection.T, atol=1e-5, rtol=0)


# --- bigG (SDXL / SD3 clip_g) and per-family behaviour ------------------------------------------------------

def test_big_g_in_both_layouts_gives_the_same_encoding() -> None:
    """An SDXL checkpoint's OpenCLIP-layout bigG and the same weights as an HF-layout clip_g file encode alike."""
    open_clip_sd, open_clip = tiny("open_clip_g")
    hf_sd = {k: v for k, v in open_clip_to_transformers(open_clip_sd, 3).items()}
    hf_sd = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in hf_sd.items()}
    as_hf = load_text_encoder("clip_g", hf_sd)
    for prompt in ("a photo of a cat", "a (photo:1.3) of a cat, " + "dog " * 80):
        a, a_pooled = open_clip.encode(prompt)
        b, b_pooled = as_hf.encode(prompt)
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5 and (a_pooled - b_pooled).abs().max() < 1e-5


def test_big_g_penultimate_is_unnormalised_and_pooled_is_normed_and_projected() -> None:
    """ComfyUI SDXLClipG: hidden = penultimate layer output as is; pooled = ln_final(last)[eot] @ projection."""
    state_dict, encoder = tiny("open_clip_g")
    chunks = unweighted(encoder.tokenize("a photo of a cat"))
    cond, pooled = encoder.encode(chunks)
    ref = OpenClipReference(state_dict, layers=3, heads=2)
    ids = chunk_ids(chunks)
    ln = lambda t: F.layer_norm(t, (128,), state_dict["ln_final.weight"], state_dict["ln_final.bias"])
    normed, ref_pooled = ref(ids, stop_after=1)
    assert (pooled - ref_pooled).abs().max() < ATOL
    assert (ln(cond) - normed).abs().max() < ATOL and (cond - normed).abs().max() > 1e-2


def test_behaviour_overrides_give_sdxl_clip_l() -> None:
    """SDXL/SD3 run CLIP-L at the penultimate layer without final_layer_norm (CLIP_L_PENULTIMATE)."""
    from models.text import CLIP_L_PENULTIMATE

    state_dict, _ = tiny("clip_l")
    encoder = load_text_encoder("clip_l", state_dict, **CLIP_L_PENULTIMATE)
    assert encoder.default_clip_skip == -2 and encoder.config.pad_token == END_TOKEN
    reference = transformers_reference("clip_l", state_dict, TINY["clip_l"])
    chunks = unweighted(encoder.tokenize("a photo of a cat"))
    cond, _ = encoder.encode(chunks)
    ref_hidden, _ = run_transformers(reference, chunk_ids(chunks), -2, norm_hidden=False)
    assert (cond - ref_hidden).abs().max() < ATOL
    with pytest.raises(Exception, match="behaviour"):
        load_text_encoder("clip_l", state_dict, clip_skip=-2)
