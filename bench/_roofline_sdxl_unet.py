"""bench/roofline.py rows for the full-size SDXL base UNet (random bf16 weights in the file layout): batch 2
(the CFG pair), 77-token 2048-wide context, the 2816-wide ADM vector."""
from __future__ import annotations

import torch

from models.testing import SDXL_UNET_CONFIGS, module_layout, random_tensor
from models.unet import UNetModel

DTYPE = torch.bfloat16


def build() -> UNetModel:
    config = SDXL_UNET_CONFIGS["base"]
    with torch.device("meta"):
        model = UNetModel(config)
    state = {k: random_tensor(k, s, DTYPE, 0) for k, s in module_layout(UNetModel, config, "").items()}
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


def rows(sizes: list[int]) -> list:
    from bench.roofline import Forward

    model = build()
    out = []
    for size in sizes:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 4, size // 8, size // 8, generator=g).to(DTYPE)
        context = torch.randn(2, 77, 2048, generator=g).to(DTYPE)
        y = torch.randn(2, 2816, generator=g).to(DTYPE)
        t = torch.tensor([999.0, 999.0])
        out.append(Forward("sdxl-unet", size, model, lambda x=x, t=t, c=context, y=y: model(x, t, c, y)))
    return out
