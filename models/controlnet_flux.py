"""FLUX.1 ControlNets: a shallow copy of the FLUX transformer (models/flux.py) whose image tokens also take the
control hint, with one Linear "zero" projection after each of its blocks.

Architecture (Zhang et al. 2023 "ControlNet", applied to FLUX.1's double / single-stream transformer; the facts
from diffusers' `FluxControlNetModel` and ComfyUI's comfy/ldm/flux/controlnet.py + comfy/controlnet.py
load_controlnet_flux_instantx / load_controlnet_flux_xlabs_mistoline, read, not copied):
- the noisy latent is patchified 2x2 and embedded (`img_in`), plus `pos_embed_input` of the hint's tokens;
  the conditioning vector is time + guidance ([dev]) + pooled CLIP-L embeddings, the text goes through
  `txt_in`, and N double-stream then M single-stream blocks run as in the base model (same rotary ids);
- after double block i, `controlnet_blocks.i` of the image tokens; after single block i,
  `controlnet_single_blocks.i` of the image part of the joint sequence;
- the base model (19 + 38 blocks) adds those outputs to its image tokens after its own blocks: each ControlNet
  output is given to ceil(19 / N) (ceil(38 / M)) base blocks.

Three file formats:
- "latent" (InstantX, Shakker-Labs Union / Union-Pro, alimama's inpainting net; diffusers' layout, converted
  by models/convert/controlnet_flux.py): the hint is the VAE latent of the control image in FLUX's latent
  format (16 channels, 17 with the inpainting keep-mask), patchified; consecutive base blocks share an output
  (block j takes output j // ceil(19 / N)). Union nets have `controlnet_mode_embedder` (an Embedding of the
  control modes): the chosen mode's vector is put before the text tokens (with text position id 0).
- "pixels" (XLabs; BFL names): the hint is the RGB image in [-1, 1] through `input_hint_block` (8 3x3 convs, 16
  wide, stride 2 at the 3rd, 5th and 7th: down to the latent grid), then patchified; the outputs are cycled
  over the base blocks (block j takes output j mod N).
- "mistoline" (TheMistoAI's MistoLine FLUX net; XLabs names but `input_cond_block.encoder` of 10 convs and
  `controlnet_blocks.i.linear` followed by SiLU): as "pixels".

Shapes: B batch, H/W latent sides, N image tokens, T text tokens, D width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import DEFAULT_ATTENTION, attention_backend
from models.controlnet import ControlResiduals
from models.flux import TIME_FACTOR, DoubleStreamBlock, FluxConfig, MLPEmbedder, SingleStreamBlock, image_ids, rope_frequencies
from models.unet import timestep_embedding

HINT_FORMATS = ("latent", "pixels", "mistoline")
BASE_DOUBLE, BASE_SINGLE = 19, 38        # the released FLUX.1 depth the outputs are spread over (as ComfyUI)
HINT_WIDTH = 16                          # the pixel hint encoders' width (16 x 4 = 64 token values)
# (in, out, kernel, stride) of XLabs' input_hint_block and MistoLine's input_cond_block.encoder convs
XLABS_HINT_CONVS = ((3, 16, 3, 1), (16, 16, 3, 1), (16, 16, 3, 2), (16, 16, 3, 1), (16, 16, 3, 2),
                    (16, 16, 3, 1), (16, 16, 3, 2), (16, 16, 3, 1))
MISTOLINE_HINT_CONVS = ((3, 16, 3, 1), (16, 16, 1, 1), (16, 16, 3, 1), (16, 16, 3, 2), (16, 16, 3, 1),
                        (16, 16, 3, 2), (16, 16, 3, 1), (16, 16, 3, 2), (16, 16, 1, 1), (16, 16, 3, 1))


@dataclass(frozen=True)
class FluxControlNetConfig:
    flux: FluxConfig                     # widths; depth / depth_single_blocks = the ControlNet's own blocks
    hint_format: str = "latent"          # one of HINT_FORMATS
    hint_channels: int = 16              # latent channels of a latent hint (17: + keep-mask); 3 for pixels
    union_modes: int = 0                 # rows of controlnet_mode_embedder (0: not a union net)

    @property
    def is_inpaint(self) -> bool:
        return self.hint_format == "latent" and self.hint_channels == 17

    @property
    def latent_hint(self) -> bool:
        return self.hint_format == "latent"

    @property
    def hint_token_width(self) -> int:
        p = self.flux.patch_size
        return (self.hint_channels if self.latent_hint else HINT_WIDTH) * p * p


def _conv_stack(convs) -> nn.Sequential:
    """Convs with a SiLU between each pair (module indices 0, 2, 4, ... as the files name them)."""
    layers: list[nn.Module] = []
    for i, (cin, cout, k, stride) in enumerate(convs):
        if i:
            layers.append(nn.SiLU())
        layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
    return nn.Sequential(*layers)


class _CondEncoder(nn.Module):
    """MistoLine's `input_cond_block` (its convs under `encoder.`)."""

    def __init__(self):
        super().__init__()
        self.encoder = _conv_stack(MISTOLINE_HINT_CONVS)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class _SiLULinear(nn.Module):
    """MistoLine's control projection: SiLU(linear(x))."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.linear(x))


def _patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C*p*p] (values ordered channel, row, column, as FLUX's)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def _pad_to_patch(x: Tensor, p: int) -> Tensor:
    pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
    return F.pad(x, (0, pad_w, 0, pad_h), mode="circular") if pad_h or pad_w else x


class FluxControlNet(nn.Module):
    """(x [B, 16, H, W], hint [B|1, Ch, H, W] latent or [B|1, 3, 8H, 8W] pixels in [0, 1], timesteps [B] (sigma),
    context [B, T, 4096], y [B, 768], guidance [B]) -> ControlResiduals (`after_block` for the base's double
    blocks, `after_single` for its single blocks)."""

    OFFLOAD_BLOCKS = ("double_blocks", "single_blocks")

    def __init__(self, config: FluxControlNetConfig, attention: str = DEFAULT_ATTENTION):
        super().__init__()
        if config.hint_format not in HINT_FORMATS:
            raise ValueError(f"FLUX ControlNet hint format {config.hint_format!r} is not one of {HINT_FORMATS}")
        self.config = config
        c = config.flux
        d = c.hidden_size
        self.attention_fn = attention_backend(attention)
        self.img_in = nn.Linear(c.in_channels, d)
        self.time_in = MLPEmbedder(256, d)
        self.vector_in = MLPEmbedder(c.vec_in_dim, d)
        self.guidance_in = MLPEmbedder(256, d) if c.guidance_embed else None
        self.txt_in = nn.Linear(c.context_in_dim, d)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(c) for _ in range(c.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(c) for _ in range(c.depth_single_blocks))
        block = (lambda: _SiLULinear(d)) if config.hint_format == "mistoline" else (lambda: nn.Linear(d, d))
        self.controlnet_blocks = nn.ModuleList(block() for _ in range(c.depth))
        self.controlnet_single_blocks = nn.ModuleList(block() for _ in range(c.depth_single_blocks))
        self.controlnet_mode_embedder = nn.Embedding(config.union_modes, d) if config.union_modes else None
        self.pos_embed_input = nn.Linear(config.hint_token_width, d)
        if config.hint_format == "pixels":
            self.input_hint_block = _conv_stack(XLABS_HINT_CONVS)
        elif config.hint_format == "mistoline":
            self.input_cond_block = _CondEncoder()

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.weight.dtype

    def hint_tokens(self, hint: Tensor) -> Tensor:
        """The hint as [B, N, hint_token_width] tokens: a latent patchified; pixels in [0, 1] mapped to [-1, 1]
        and encoded to the latent grid first."""
        p = self.config.flux.patch_size
        hint = hint.to(self.dtype)
        if self.config.hint_format == "pixels":
            hint = self.input_hint_block(hint * 2.0 - 1.0)                          # [B, 16, H, W]
        elif self.config.hint_format == "mistoline":
            hint = self.input_cond_block(hint * 2.0 - 1.0)
        return _patchify(_pad_to_patch(hint, p), p)

    def block_outputs(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                      guidance: Tensor | None = None, control_types: tuple[int, ...] = ()
                      ) -> tuple[list[Tensor], list[Tensor]]:
        """The projections after each double block and each single block, each [B, N, D]."""
        c = self.config.flux
        dtype = self.dtype
        p = c.patch_size
        x = _pad_to_patch(x, p)
        b, h, w = x.shape[0], x.shape[-2] // p, x.shape[-1] // p
        img = self.img_in(_patchify(x.to(dtype), p)) + self.pos_embed_input(self.hint_tokens(hint))   # [B, N, D]
        emb = lambda t: timestep_embedding(t.float() * TIME_FACTOR, 256).to(dtype)    # noqa: E731
        vec = self.time_in(emb(timesteps))
        if self.guidance_in is not None and guidance is not None:
            vec = vec + self.guidance_in(emb(guidance.to(timesteps.device).reshape(-1).expand(b)))
        if y is None:
            y = torch.zeros(b, c.vec_in_dim, device=x.device)
        vec = vec + self.vector_in(y[:, :c.vec_in_dim].to(dtype))
        txt = self.txt_in(context.to(dtype))                                          # [B, T, D]
        if self.controlnet_mode_embedder is not None and control_types:
            modes = self.controlnet_mode_embedder(torch.tensor(list(control_types), device=x.device))   # [k, D]
            txt = torch.cat([modes.to(dtype).unsqueeze(0).expand(b, -1, -1), txt], dim=1)
        txt_ids = torch.zeros(b, txt.shape[1], 3, device=x.device)
        rope = rope_frequencies(torch.cat([txt_ids, image_ids(h, w, b, device=x.device)], dim=1), c.axes_dim, c.theta)
        doubles, singles = [], []
        for block, out in zip(self.double_blocks, self.controlnet_blocks):
            img, txt = block(img, txt, vec, rope, self.attention_fn)
            doubles.append(out(img))
        joint = torch.cat([txt, img], dim=1)
        for block, out in zip(self.single_blocks, self.controlnet_single_blocks):
            joint = block(joint, vec, rope, self.attention_fn)
            singles.append(out(joint[:, txt.shape[1]:]))
        return doubles, singles

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                guidance: Tensor | None = None, control_types: tuple[int, ...] = ()) -> ControlResiduals:
        doubles, singles = self.block_outputs(x, hint, timesteps, context, y, guidance, control_types)
        consecutive = self.config.latent_hint
        return ControlResiduals(after_block=spread_outputs(doubles, BASE_DOUBLE, consecutive),
                                after_single=spread_outputs(singles, BASE_SINGLE, consecutive))


def spread_outputs(outputs: list[Tensor], base_blocks: int, consecutive: bool) -> dict[int, Tensor]:
    """{base block: ControlNet output}: each of n outputs to ceil(base / n) base blocks, consecutive runs
    (latent-hint nets) or cycled (XLabs), as ComfyUI's ControlNetFlux spreads them."""
    if not outputs:
        return {}
    k = math.ceil(base_blocks / len(outputs))
    return {j: outputs[j // k] if consecutive else outputs[j % len(outputs)] for j in range(base_blocks)}
