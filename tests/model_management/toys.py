"""Tiny random-weight modules and a toy txt2img loop for the memory-management tests.

They stand in for the real UNet / text encoder / VAE (model_management sees only `nn.Module`s with
an `OFFLOAD_BLOCKS` class attribute), so the tests run in well under a second on two CPU cores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_management import ModelHandle, ModelManager, estimate_working_memory

CONTEXT_DIM = 16
TOY_MEMORY_FACTOR = 0.02      # the estimates are sized for SD-scale UNets; toys use a fraction


class ToyBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(CONTEXT_DIM, 2 * channels, bias=False)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = x + self.conv(F.silu(self.norm(x)))
        b, c, height, width = h.shape
        q = self.to_q(h.flatten(2).transpose(1, 2))                       # [B, HW, C]
        k, v = self.to_kv(context).chunk(2, dim=-1)                        # 2 x [B, T, C]
        attn = F.scaled_dot_product_attention(q, k, v)                     # [B, HW, C]
        return h + attn.transpose(1, 2).reshape(b, c, height, width)


class ToyUNet(nn.Module):
    OFFLOAD_BLOCKS = ("input_blocks", "output_blocks")
    # their layers' weights are read only inside the layers' own forward: streamable layer by layer
    OFFLOAD_LAYERS = True

    def __init__(self, channels: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.time_embed = nn.Sequential(nn.Linear(1, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.input_blocks = nn.ModuleList(ToyBlock(channels) for _ in range(depth))
        self.middle_block = ToyBlock(channels)
        self.output_blocks = nn.ModuleList(ToyBlock(channels) for _ in range(depth))
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)
        self.register_buffer("out_scale", torch.full((1,), 0.5))
        # a weight of the root module itself: streamed, it stays on the device through the whole forward
        self.class_embed = nn.Parameter(torch.randn(256, channels) * 0.1)

    def forward(self, x: Tensor, sigma: Tensor, context: Tensor) -> Tensor:
        dtype = self.conv_in.weight.dtype
        h = self.conv_in(x.to(dtype))
        h = h + self.time_embed(sigma.to(dtype)[:, None])[:, :, None, None]
        h = h + self.class_embed[0, :, None, None]
        for block in self.input_blocks:
            h = block(h, context.to(dtype))
        h = self.middle_block(h, context.to(dtype))
        for block in self.output_blocks:
            h = block(h, context.to(dtype))
        return (self.conv_out(h) * self.out_scale).to(x.dtype)


class ToyTextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, CONTEXT_DIM)
        self.proj = nn.Linear(CONTEXT_DIM, CONTEXT_DIM)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.proj(self.embed(tokens))


class ToyVAEDecoder(nn.Module):
    OFFLOAD_BLOCKS = ("up",)

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, 16, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1))
        self.conv_out = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.interpolate(self.conv_in(z), scale_factor=2.0)
        return self.conv_out(self.up(h))


def make(cls, seed: int, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return cls(**kwargs).eval()


def txt2img(manager: ModelManager, unet: ModelHandle, text: ModelHandle, vae: ModelHandle, *, seed: int = 0,
            steps: int = 4, size: int = 8, cfg: float = 5.0, options: dict | None = None) -> Tensor:
    """Text encode, Euler with CFG, VAE decode; every model loaded through `manager` before its call."""
    options = options or {}
    mode = options.get("vram_mode")
    with torch.no_grad():
        manager.load_models_for([text], 0, vram_mode=mode)
        tokens = torch.tensor([[1, 5, 9, 3], [0, 0, 0, 0]])
        context = text.module(tokens)                                      # [2, T, D]: cond, uncond
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 4, size, size, generator=gen)
        sigmas = torch.linspace(10.0, 0.0, steps + 1)
        is_split = options.get("is_cfg_split", False)
        batch = 1 if is_split else 2
        work = estimate_working_memory((batch, 4, size, size), torch.float32, memory_factor=TOY_MEMORY_FACTOR,
                                       attention_backend=options.get("attention_backend", "naive"))
        manager.load_models_for([unet], work, vram_mode=mode)
        for i in range(steps):
            s = sigmas[i]
            if is_split:
                cond = unet.module(x, s.expand(1), context[:1])
                uncond = unet.module(x, s.expand(1), context[1:])
            else:
                cond, uncond = unet.module(x.repeat(2, 1, 1, 1), s.expand(2), context).chunk(2)
            eps = uncond + cfg * (cond - uncond)
            x = x + eps * (sigmas[i + 1] - s)                               # Euler step on eps
        work = estimate_working_memory(tuple(x.shape), torch.float32, memory_factor=TOY_MEMORY_FACTOR)
        manager.load_models_for([vae], work, vram_mode=mode)
        return vae.module(x)
