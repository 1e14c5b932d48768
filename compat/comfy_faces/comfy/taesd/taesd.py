"""ComfyUI's ``comfy.taesd.taesd`` building blocks for plugins that assemble their own tiny autoencoders from a
state dict (KJNodes' TinyVAE): ``conv`` (3x3, padding 1), ``Clamp`` (soft clamp to (-3, 3)) and ``Block``
(conv-ReLU-conv-ReLU-conv plus a skip, then ReLU; the skip is a bias-free 1x1 conv when the widths differ).
Module names and parameter keys are ComfyUI's (``conv.0/2/4``, ``skip``), so its TAESD weights load.
Plexus's own TAESD preview decoder is diffusion/previews.py; the full ``TAESD`` class is latent_preview's."""
from __future__ import annotations

import torch
from torch import Tensor, nn

import comfy.ops


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return comfy.ops.disable_weight_init.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = (nn.Identity() if n_in == n_out
                     else comfy.ops.disable_weight_init.Conv2d(n_in, n_out, 1, bias=False))
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))
