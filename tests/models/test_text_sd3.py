"""SD3's text conditioning against transformers: CLIP-L / CLIP-G penultimate states side by side, padded to
T5's width, followed by T5's states; pooled = [CLIP-L pooled, CLIP-G projected pooled]."""
from __future__ import annotations

import torch

from models.sd3_checkpoint import load_sd3_text_encoder
from models.testing import sd3_text_state, tiny_sd3_spec
from models.text import sd3


def towers_and_states():
    spec = tiny_sd3_spec()
    states = {k: sd3_text_state(k, c, seed=2) for k, c in spec.text_configs.items()}
    return spec, states, {k: load_sd3_text_encoder(k, s, torch.float32) for k, s in states.items()}


def hf_clip(kind, config, state):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    hf = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads, projection_dim=config.pooled_dim,
        hidden_act=config.activation, max_position_embeddings=77, eos_token_id=49407))
    state = dict(state)
    if "text_projection.weight" not in state:                     # CLIP-L: pooled unprojected -> identity
        state["text_projection.weight"] = torch.eye(config.hidden_size)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"text_model.embeddings.position_ids"}
    return hf.eval()


def test_combination_matches_transformers():
    spec, states, towers = towers_and_states()
    tokens = sd3.tokenize(towers, "a photo of a cat")
    context, pooled = sd3.encode(towers, tokens)
    assert context.shape == (1, 77 + 77, 64) and pooled.shape == (1, 64)
    with torch.no_grad():
        parts, pools = [], []
        for kind in ("clip_l", "clip_g"):
            ids = torch.tensor([[t for t, _ in tokens[kind][0]]])
            out = hf_clip(kind, spec.text_configs[kind], states[kind])(input_ids=ids, output_hidden_states=True)
            parts.append(out.hidden_states[-2])                    # penultimate, no final layer norm
            pools.append(out.text_embeds)
        from transformers import T5Config, T5EncoderModel
        c = spec.text_configs["t5xxl"]
        t5 = T5EncoderModel(T5Config(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, num_heads=c.num_heads,
                                     d_ff=c.d_ff, num_layers=c.num_layers, feed_forward_proj="gated-gelu",
                                     dropout_rate=0.0)).eval()
        t5.load_state_dict(states["t5xxl"], strict=False)
        t5_out = t5(input_ids=torch.tensor([[t for t, _ in tokens["t5xxl"][0]]])).last_hidden_state
    want = torch.cat([torch.cat(parts, dim=-1), t5_out], dim=1)     # L 32 + G 32 = T5's 64: no padding here
    torch.testing.assert_close(context, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, torch.cat(pools, dim=-1), atol=1e-4, rtol=1e-4)


def test_absent_towers_are_zeros_of_sd3_widths():
    _, _, towers = towers_and_states()
    only_g = {"clip_g": towers["clip_g"]}
    context, pooled = sd3.encode(only_g, sd3.tokenize(only_g, "a cat"))
    # CLIP-G alone: 768 zeros in front, then padded to 4096 (no T5 to say otherwise)
    assert context.shape == (1, 77, 4096) and context[..., :768].abs().sum() == 0
    assert context[..., 768:800].abs().sum() > 0 and context[..., 800:].abs().sum() == 0
    assert pooled.shape == (1, 768 + 32) and pooled[:, :768].abs().sum() == 0
    context, pooled = sd3.encode({}, {})
    assert context.shape == (1, 77, 4096) and pooled.shape == (1, 2048) and context.abs().sum() == 0
