"""FLUX.1 ([dev], [schnell], Fill, Depth/Canny, Kontext): the rectified-flow transformer in the
single-file layout Black Forest Labs publish (`flux1-dev.safetensors`, keys
`double_blocks.N.img_attn.qkv.weight`, ...).

Architecture (Black Forest Labs, "FLUX.1" model cards and their reference code `flux/model.py`,
`flux/modules/layers.py`; behaviour, not code): latents are cut into 2x2 patches (16 channels -> 64 values
per token), the image and text tokens carry 3-axis rotary position embeddings over (index, row, column)
ids (Su et al. 2021, RoFormer, applied per axis to slices of each head of 16 + 56 + 56 values). N
double-stream blocks keep separate image and text weights and attend jointly (as MM-DiT, Esser et al.
2024), with per-head RMS-normalised q and k; M single-stream blocks run on the concatenated sequence
with one fused linear for q, k, v and the MLP input and one for the attention + MLP output (parallel
layers, Dehghani et al. 2023, ViT-22B). The timestep, the pooled CLIP-L vector and, in the
guidance-distilled [dev], the guidance value are summed into one conditioning vector that modulates
every block (adaLN, Peebles & Xie 2023). Every size comes from the config, so a 1+1-block test model
takes the path of the 19+38-block released ones.

Shapes: B batch, C latent channels, H/W latent sides, N = (H/2)(W/2) image tokens, T text tokens,
D hidden width, h heads, d = D / h head width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, AttentionFn, attention_backend
from models.mmdit import RMSNorm
from models.unet import timestep_embedding

NORM_EPS = 1e-6
TIME_FACTOR = 1000.0          # the sinusoidal embeddings take t * 1000 (t, guidance in sigma units)


@dataclass(frozen=True)
class FluxConfig:
    in_channels: int = 64                 # img_in input: C * p * p (384 for Fill, 128 for Depth/Canny)
    out_channels: int = 64                # final layer output: 16 latent channels * p * p
    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19                       # double-stream blocks
    depth_single_blocks: int = 38
    context_in_dim: int = 4096            # T5-XXL width
    vec_in_dim: int = 768                 # pooled CLIP-L
    mlp_ratio: float = 4.0
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    qkv_bias: bool = True
    guidance_embed: bool = True           # [dev]; [schnell] has no guidance_in
    patch_size: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


# --- rotary position embeddings ----------------------------------------------------------------------

def rope_frequencies(ids: Tensor, axes_dim: tuple[int, ...], theta: float) -> tuple[Tensor, Tensor]:
    """ids [B, L, n_axes] -> (cos, sin) each [B, 1, L, d/2]: axis i rotates axes_dim[i]/2 value pairs at
    frequencies theta^(-2j/axes_dim[i]) times the id on that axis (computed in float64)."""
    angles = []
    for i, dim in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim)
        angles.append(ids[..., i].to(torch.float64).unsqueeze(-1) * omega)          # [B, L, dim/2]
    a = torch.cat(angles, dim=-1).unsqueeze(1)                                       # [B, 1, L, d/2]
    return a.cos().float(), a.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent value pairs (x[2j], x[2j+1]) of each head by the pair's angle; x [B, h, L, d]."""
    xf = x.float().unflatten(-1, (-1, 2))                                            # [B, h, L, d/2, 2]
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1)
    return out.flatten(-2).to(x.dtype)


def image_ids(h: int, w: int, batch: int, *, index: float = 0.0, row: int = 0, column: int = 0,
              device=None) -> Tensor:
    """[B, h*w, 3] ids (index, row, column) of an h x w grid of patches whose first patch is at
    (row, column)."""
    ids = torch.zeros(h, w, 3, device=device)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(row, row + h, device=device, dtype=torch.float32)[:, None]
    ids[..., 2] = torch.arange(column, column + w, device=device, dtype=torch.float32)[None, :]
    return ids.reshape(1, h * w, 3).expand(batch, -1, -1)


REFERENCE_METHODS = ("offset", "index", "uxo")


def reference_placements(sizes: list[tuple[int, int]], method: str, h: int, w: int,
                         patch: int = 2) -> list[tuple[int, int, int]]:
    """(index, first row, first column) in patches of each reference latent (FLUX.1 Kontext), `sizes` their
    (height, width) in latent pixels, h x w the generated image in patches. "offset" (Kontext's own): index
    1, each further reference beside (or below) those before it, along the shorter side of the space they
    cover; "index": at the origin with index 1, 2, ...; "uxo" (UNO / USO): index 0, diagonally past the
    image and the references before it (ComfyUI comfy/ldm/flux/model.py `ref_latents_method`; behaviour,
    not code). Offsets are rounded to whole patches as ComfyUI does ((offset + 1) // 2)."""
    if method not in REFERENCE_METHODS:
        raise ValueError(f"reference latent method {method!r} is not one of {REFERENCE_METHODS}")
    out, covered_h, covered_w, index = [], 0, 0, 0
    for ref_h, ref_w in sizes:
        row = column = 0
        if method == "index":
            index += 1
        elif method == "uxo":
            index, row, column = 0, h * patch + covered_h, w * patch + covered_w
            covered_h, covered_w = covered_h + ref_h, covered_w + ref_w
        else:
            index = 1
            if ref_h + covered_h > ref_w + covered_w:
                column = covered_w
            else:
                row = covered_h
            covered_h, covered_w = max(covered_h, ref_h + row), max(covered_w, ref_w + column)
        out.append((index, (row + patch // 2) // patch, (column + patch // 2) // patch))
    return out


# --- layers --------------------------------------------------------------------------------------------

class MLPEmbedder(nn.Module):
    """in_layer -> SiLU -> out_layer (time_in, vector_in, guidance_in)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, dim)
        self.out_layer = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class QKNorm(nn.Module):
    """Per-head RMSNorm of q and k (`norm.query_norm.scale`, `norm.key_norm.scale` in the file)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = _ScaleRMSNorm(head_dim)
        self.key_norm = _ScaleRMSNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q), self.key_norm(k)


class _ScaleRMSNorm(RMSNorm):
    """RMSNorm whose gain is stored as `scale` (the FLUX name) instead of `weight`."""

    def __init__(self, dim: int):
        nn.Module.__init__(self)
        self.eps = NORM_EPS
        self.scale = nn.Parameter(torch.ones(dim))

    @property
    def weight(self) -> Tensor:   # type: ignore[override]
        return self.scale


class Modulation(nn.Module):
    """lin(SiLU(vec)) -> `n` D-wide vectors [B, 1, D] (shift, scale, gate per sub-layer)."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(dim, n * dim)

    def forward(self, vec: Tensor) -> tuple[Tensor, ...]:
        return self.lin(F.silu(vec)).unsqueeze(1).chunk(self.n, dim=-1)


class SelfAttention(nn.Module):
    """The qkv / norm / proj of one stream of a double block (the attention itself is joint)."""

    def __init__(self, config: FluxConfig):
        super().__init__()
        d = config.hidden_size
        self.qkv = nn.Linear(d, 3 * d, bias=config.qkv_bias)
        self.norm = QKNorm(config.head_dim)
        self.proj = nn.Linear(d, d)


def _heads(x: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """[B, L, 3D] -> q, k, v each [B, h, L, d]."""
    b, n, _ = x.shape
    return x.view(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=NORM_EPS), 1 + scale)


def _attend(q: Tensor, k: Tensor, v: Tensor, rope: tuple[Tensor, Tensor], attention_fn: AttentionFn,
            mask: Tensor | None = None) -> Tensor:
    """Joint attention; `mask` [B, 1, L, L]: an additive bias on the scores (query rows, key columns; -inf
    hides a key), computed by SDPA whatever the model's backend."""
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if mask is not None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
    else:
        out = attention_fn(q, k, v, False)
    return out.transpose(1, 2).flatten(2)                                            # [B, L, D]


MASK_FLOOR = -1e4            # a bias this low hides a key as -inf does (exp underflows to 0 in fp32 and bf16)


def joint_mask_for_grid(mask: Tensor, grid_in: tuple[int, int], grid_out: tuple[int, int]) -> Tensor:
    """An attention bias [B, T + hi*wi, T + hi*wi] over text tokens then an hi x wi grid of image tokens,
    resized to an ho x wo grid: its text-to-image and image-to-text parts bilinearly over the grid side,
    the image-to-image part over the key grid, then over the query grid (as ComfyUI's
    utils.upscale_dit_mask does for FLUX's attention_mask; behaviour, not code). [Q, K] masks get a batch.
    Hidden keys (-inf) are resized as MASK_FLOOR: ComfyUI's resize turns them into NaN wherever a bilinear
    weight is 0 (StyleModelApply attn_bias at strength 0 gives a NaN image there); here they stay hidden."""
    (hi, wi), (ho, wo) = grid_in, grid_out
    if (hi, wi) == (ho, wo):
        return mask
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"an attention mask is [batch, queries, keys] or [queries, keys], got {list(mask.shape)}")
    b, t = mask.shape[0], mask.shape[1] - hi * wi
    if t < 0 or mask.shape[2] != mask.shape[1]:
        raise ValueError(f"an attention mask of shape {list(mask.shape)} does not cover a {hi} x {wi} image grid")
    if not mask.is_floating_point():                   # a boolean mask: True attends (bias 0), False hides
        mask = torch.log(mask.float())
    mask = mask.clamp(min=MASK_FLOOR)                  # -inf * a zero interpolation weight would be NaN

    def grid(x: Tensor) -> Tensor:                     # [b, c, hi*wi] -> [b, c, ho*wo]
        x = F.interpolate(x.reshape(b, x.shape[1], hi, wi), size=(ho, wo), mode="bilinear")
        return x.flatten(2)

    txt_txt, txt_img = mask[:, :t, :t], grid(mask[:, :t, t:])
    img_txt = grid(mask[:, t:, :t].transpose(1, 2)).transpose(1, 2)                 # [b, ho*wo, t]
    img_img = grid(mask[:, t:, t:])                                                  # keys resized
    img_img = grid(img_img.transpose(1, 2)).transpose(1, 2)                          # then queries
    return torch.cat([torch.cat([txt_txt, txt_img], dim=2), torch.cat([img_txt, img_img], dim=2)], dim=1)


class DoubleStreamBlock(nn.Module):
    def __init__(self, config: FluxConfig):
        super().__init__()
        d, m = config.hidden_size, config.mlp_hidden
        self.num_heads = config.num_heads
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(d, 6))
            setattr(self, f"{stream}_attn", SelfAttention(config))
            setattr(self, f"{stream}_mlp", nn.Sequential(nn.Linear(d, m), nn.GELU(approximate="tanh"), nn.Linear(m, d)))

    def _pre(self, stream: str, x: Tensor, vec: Tensor):
        mod = getattr(self, f"{stream}_mod")(vec)
        attn = getattr(self, f"{stream}_attn")
        q, k, v = _heads(attn.qkv(_modulate(x, mod[0], mod[1])), self.num_heads)
        q, k = attn.norm(q, k)
        return (q, k, v), mod

    def _post(self, stream: str, x: Tensor, attn_out: Tensor, mod) -> Tensor:
        x = x + mod[2] * getattr(self, f"{stream}_attn").proj(attn_out)
        return x + mod[5] * getattr(self, f"{stream}_mlp")(_modulate(x, mod[3], mod[4]))

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, rope, attention_fn: AttentionFn,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        (iq, ik, iv), img_mod = self._pre("img", img, vec)
        (tq, tk, tv), txt_mod = self._pre("txt", txt, vec)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((tq, iq), (tk, ik), (tv, iv)))  # text first
        out = _attend(q, k, v, rope, attention_fn, mask)
        t = txt.shape[1]
        return self._post("img", img, out[:, t:], img_mod), self._post("txt", txt, out[:, :t], txt_mod)


class SingleStreamBlock(nn.Module):
    """linear1: x -> [q, k, v, mlp_in]; linear2: [attention, GELU(mlp_in)] -> D; one gated residual."""

    def __init__(self, config: FluxConfig):
        super().__init__()
        d, m = config.hidden_size, config.mlp_hidden
        self.num_heads, self.hidden, self.mlp_hidden = config.num_heads, d, m
        self.linear1 = nn.Linear(d, 3 * d + m)
        self.linear2 = nn.Linear(d + m, d)
        self.norm = QKNorm(config.head_dim)
        self.modulation = Modulation(d, 3)

    def forward(self, x: Tensor, vec: Tensor, rope, attention_fn: AttentionFn, mask: Tensor | None = None) -> Tensor:
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(_modulate(x, shift, scale)).split([3 * self.hidden, self.mlp_hidden], dim=-1)
        q, k, v = _heads(qkv, self.num_heads)
        q, k = self.norm(q, k)
        out = _attend(q, k, v, rope, attention_fn, mask)
        return x + gate * self.linear2(torch.cat([out, F.gelu(mlp, approximate="tanh")], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, config: FluxConfig):
        super().__init__()
        d = config.hidden_size
        self.linear = nn.Linear(d, config.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(_modulate(x, shift, scale))


class Flux(nn.Module):
    """forward(x [B, C, H, W], timesteps [B] (sigma), context [B, T, 4096], y [B, 768] pooled CLIP-L,
    guidance [B] (dev)) -> velocity [B, out_channels / 4, H, W]."""

    OFFLOAD_BLOCKS = ("double_blocks", "single_blocks")
    compute_dtype: torch.dtype | None = None   # None: its weights' dtype; set for fp8 weights (models/fp8_weights.py)
    EXTRA_INPUTS = {"y": "pooled_output", "guidance": "guidance", "attention_mask": "attention_mask"}

    def __init__(self, config: FluxConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        if sum(config.axes_dim) != config.head_dim:
            raise ValueError(f"rotary axes {config.axes_dim} do not add up to the head width {config.head_dim}")
        self.config = config
        self.attention_fn = attention_backend(attention)
        d = config.hidden_size
        self.img_in = nn.Linear(config.in_channels, d)
        self.time_in = MLPEmbedder(256, d)
        self.vector_in = MLPEmbedder(config.vec_in_dim, d)
        self.guidance_in = MLPEmbedder(256, d) if config.guidance_embed else None
        self.txt_in = nn.Linear(config.context_in_dim, d)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(config) for _ in range(config.depth_single_blocks))
        self.final_layer = LastLayer(config)

    @property
    def latent_in_channels(self) -> int:
        return self.config.in_channels // self.config.patch_size ** 2

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, (H/p)(W/p), C*p*p], values of a token ordered (channel, row, column)."""
        p = self.config.patch_size
        b, c, h, w = x.shape
        return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)

    def unpatchify(self, x: Tensor, h: int, w: int) -> Tensor:
        p = self.config.patch_size
        b = x.shape[0]
        return x.view(b, h, w, -1, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h * p, w * p)

    def forward_tokens(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, timesteps: Tensor,
                       y: Tensor, guidance: Tensor | None = None, attention_mask: Tensor | None = None,
                       control=None) -> Tensor:
        """The transformer on packed tokens: img [B, N, in_channels] -> [B, N, out_channels]. `attention_mask`
        [B, T + N, T + N]: an additive bias on every block's joint attention scores (text tokens first).
        `control` (models.controlnet.ControlResiduals of FLUX ControlNets): added to the first image tokens
        after each double block (`after_block`) and each single block (`after_single`)."""
        mask = None if attention_mask is None else attention_mask.unsqueeze(1)           # [B, 1, L, L]
        dtype = self.compute_dtype or self.img_in.weight.dtype
        emb = lambda t: timestep_embedding(t.float() * TIME_FACTOR, 256).to(dtype)    # noqa: E731
        vec = self.time_in(emb(timesteps))
        if self.guidance_in is not None and guidance is not None:   # None: FluxDisableGuidance
            vec = vec + self.guidance_in(emb(guidance.to(timesteps.device).reshape(-1).expand(timesteps.shape[0])))
        vec = vec + self.vector_in(y.to(dtype))
        img, txt = self.img_in(img.to(dtype)), self.txt_in(txt.to(dtype))
        rope = rope_frequencies(torch.cat([txt_ids, img_ids], dim=1), self.config.axes_dim, self.config.theta)
        for i, block in enumerate(self.double_blocks):
            img, txt = block(img, txt, vec, rope, self.attention_fn, mask)
            if control is not None:
                img = control.add_to_tokens("block", i, img)
        x = torch.cat([txt, img], dim=1)
        for i, block in enumerate(self.single_blocks):
            x = block(x, vec, rope, self.attention_fn, mask)
            if control is not None:
                x = control.add_to_tokens("single", i, x, txt.shape[1])
        return self.final_layer(x[:, txt.shape[1]:], vec)

    @staticmethod
    def _mask_for(mask: Tensor, length: int, text: int, image: int) -> Tensor:
        """The mask over `length` joint tokens. Kontext's reference tokens (after the `image` ones) are seen
        unbiased and see the text as an average image token does."""
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if not mask.is_floating_point():
            mask = torch.log(mask.float())
        short = length - mask.shape[-1]
        if short < 0 or mask.shape[-2] != mask.shape[-1] or mask.shape[-1] != text + image:
            raise ValueError(f"an attention mask of shape {list(mask.shape)} does not fit {length} text + image "
                             "tokens (was the conditioning made for another image size?)")
        if not short:
            return mask
        grown = F.pad(mask, (0, short, 0, short))
        grown[:, text + image:, :text] = mask[:, text:, :text].mean(dim=1, keepdim=True)
        return grown

    def _padded(self, x: Tensor) -> Tensor:
        """Odd sides: circular pad to whole patches (cropped again after the model, as ComfyUI)."""
        p = self.config.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        return F.pad(x, (0, pad_w, 0, pad_h), mode="circular") if pad_h or pad_w else x

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                guidance: Tensor | None = None, ref_latents: list[Tensor] | None = None,
                ref_latents_method: str = "offset", attention_mask: Tensor | None = None, control=None,
                **_: object) -> Tensor:
        """`ref_latents` (Kontext): reference latents [B, C, h_i, w_i], appended after the image tokens with
        their own position ids (reference_placements); only the image tokens come out. `attention_mask`
        [B, T + N, T + N] over the text and image tokens (StyleModelApply's attn_bias, sized to this grid by
        joint_mask_for_grid); reference tokens are seen unbiased and see the text as the image tokens do.
        `control`: FLUX ControlNet residuals (see forward_tokens)."""
        p = self.config.patch_size
        height, width = x.shape[-2:]
        x = self._padded(x)
        b, h, w = x.shape[0], x.shape[-2] // p, x.shape[-1] // p
        if y is None:
            y = torch.zeros(b, self.config.vec_in_dim, device=x.device)
        img, img_ids = self.patchify(x), image_ids(h, w, b, device=x.device)
        if ref_latents:
            sizes = [tuple(r.shape[-2:]) for r in ref_latents]
            placements = reference_placements(sizes, ref_latents_method, h, w, p)
            tokens, ids = [img], [img_ids]
            for ref, (index, row, column) in zip(ref_latents, placements):
                ref = self._padded(ref.to(x))
                tokens.append(self.patchify(ref))                                    # [B, n_i, C*p*p]
                ids.append(image_ids(ref.shape[-2] // p, ref.shape[-1] // p, b, index=index, row=row,
                                     column=column, device=x.device))
            img, img_ids = torch.cat(tokens, dim=1), torch.cat(ids, dim=1)
        txt_ids = torch.zeros(b, context.shape[1], 3, device=x.device)
        if attention_mask is not None:
            attention_mask = self._mask_for(attention_mask, context.shape[1] + img.shape[1], context.shape[1], h * w)
        out = self.forward_tokens(img, img_ids, context, txt_ids, timesteps, y, guidance, attention_mask,
                                  control)[:, :h * w]
        return self.unpatchify(out, h, w)[:, :, :height, :width]
