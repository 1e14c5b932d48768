"""T5 v1.1 encoder against transformers' T5EncoderModel (tiny random weights, HF layout as SD3 stores it),
fp8 weights computed cast, and the shipped SentencePiece vocabulary's known token ids."""
from __future__ import annotations

import hashlib

import pytest
import torch

from models.text.t5 import (
    TOKENIZER_FILE,
    T5Config,
    load_t5_encoder,
    random_t5_state_dict,
    t5_config_from_shapes,
    tokenize_t5,
)

from .conftest import manifest_shapes

TINY = T5Config(vocab_size=32128, d_model=64, d_kv=16, num_heads=4, d_ff=96, num_layers=2)


def reference(state: dict, config: T5Config):
    from transformers import T5Config as HFConfig
    from transformers import T5EncoderModel
    hf = T5EncoderModel(HFConfig(vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv,
                                 num_heads=config.num_heads, d_ff=config.d_ff, num_layers=config.num_layers,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0,
                                 relative_attention_num_buckets=config.relative_attention_num_buckets))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight"}
    return hf.eval()


def test_matches_transformers():
    state = random_t5_state_dict(TINY, seed=3)
    ours = load_t5_encoder(state)
    ids = torch.tensor([[3, 9, 1202, 13, 3, 9, 1712, 1] + [0] * 150])     # past max_distance 128
    with torch.no_grad():
        want = reference(state, TINY)(input_ids=ids).last_hidden_state
        got = ours.model(ids, torch.float32)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fp8_weights_stay_fp8_and_compute_cast():
    state = random_t5_state_dict(TINY, seed=4, with_embed_tokens_copy=True)
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in state.items()}
    encoder = load_t5_encoder(fp8)
    assert encoder.model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    assert encoder.model.encoder.block[1].layer[0].SelfAttention.q.weight.data_ptr() == \
        fp8["encoder.block.1.layer.0.SelfAttention.q.weight"].data_ptr()          # no copy at load
    cond, pooled = encoder.encode("a photo of a cat")
    dequantised = {k: v.float() for k, v in fp8.items() if k != "encoder.embed_tokens.weight"}
    with torch.no_grad():
        want = reference(dequantised, TINY)(input_ids=torch.tensor([tokenize_t5("a photo of a cat")[i][0]
                                                                    for i in range(77)])[None]).last_hidden_state
    assert pooled is None and cond.dtype == torch.float32 and cond.shape == (1, 77, 64)
    torch.testing.assert_close(cond, want, atol=1e-4, rtol=1e-4)


def test_weighted_prompt_follows_the_empty_prompt_rule():
    encoder = load_t5_encoder(random_t5_state_dict(TINY, seed=5))
    plain, _ = encoder.encode("a cat")
    weighted, _ = encoder.encode("a (cat:1.5)")
    tokens = tokenize_t5("a (cat:1.5)")
    empty = encoder.model(torch.tensor([[1] + [0] * 76]), torch.float32)[0]
    z = encoder.model(torch.tensor([[t for t, _ in tokens]]), torch.float32)[0]
    w = torch.tensor([wt for _, wt in tokens])[:, None]
    torch.testing.assert_close(weighted[0], torch.where(w == 1.0, z, (z - empty) * w + empty))
    assert not torch.allclose(plain, weighted)


def test_known_token_ids():
    # Google's T5 vocabulary: "▁" is 3, "a" 9, "▁photo" 1202, "▁of" 13, "▁cat" 1712; end 1, pad 0
    assert [t for t, _ in tokenize_t5("a photo of a cat")][:9] == [3, 9, 1202, 13, 3, 9, 1712, 1, 0]
    assert [t for t, _ in tokenize_t5("Hello, World!")][:6] == [8774, 6, 1150, 55, 1, 0]
    assert len(tokenize_t5("")) == 77 and tokenize_t5("")[0] == (1, 1.0)
    assert len(tokenize_t5("word " * 100)) == 101                   # one chunk, longer than 77
    assert [w for _, w in tokenize_t5("a (cat:1.5)")][:4] == [1.0, 1.0, 1.5, 1.0]


def test_vocabulary_file_is_the_documented_one():
    assert hashlib.sha256(TOKENIZER_FILE.read_bytes()).hexdigest() == \
        "2b703eba36b82580eb01370eb1e4bc1de92469d55c5f5feb36be767d2db2d60d"


def test_t5xxl_config_from_the_sd3_manifest():
    prefix = "text_encoders.t5xxl.transformer."
    shapes = {k[len(prefix):]: v for k, v in manifest_shapes("sd3_medium").items() if k.startswith(prefix)}
    shapes.pop("encoder.embed_tokens.weight")
    assert t5_config_from_shapes(shapes) == T5Config()
    with torch.device("meta"):
        encoder = load_t5_encoder({k: torch.empty(s, dtype=torch.float8_e4m3fn) for k, s in shapes.items()})
    assert sum(p.numel() for p in encoder.parameters()) == 4_762_310_656


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_to_half_is_exact_for_every_finite_value(fp8):
    from models.text.t5 import fp8_to_half
    values = torch.arange(256, dtype=torch.uint8).view(fp8)
    reference = values.float()
    got = fp8_to_half(values, torch.empty(256, dtype=torch.int16)).float()
    finite = reference.isfinite()
    assert finite.sum() >= 240 and torch.equal(got[finite], reference[finite])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_linear_by_rows_matches_casting_the_whole_weight(dtype, monkeypatch):
    import torch.nn.functional as F

    from models.text import t5
    monkeypatch.setattr(t5, "ROW_CHUNK_ELEMENTS", 7 * 48)          # 7 rows a block: 15 blocks, the last short
    torch.manual_seed(0)
    w = (torch.randn(101, 48) * 0.2).to(torch.float8_e4m3fn)
    x = torch.randn(2, 5, 48).to(dtype)
    layer = t5.T5Linear(48, 101, bias=False)
    layer.weight.data = w
    torch.testing.assert_close(layer(x), F.linear(x, w.to(dtype)), rtol=1e-6, atol=1e-6)
