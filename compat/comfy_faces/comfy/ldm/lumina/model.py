"""ComfyUI's ``comfy.ldm.lumina.model`` for plugins: ``FeedForward``, the gated-SiLU MLP of Lumina 2 style
transformers (packs call ``FeedForward.forward(self, x)`` on such blocks). Plexus has no Lumina model; the
transformer itself is not faced."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

import comfy.ops


class FeedForward(nn.Module):
    """``w2(silu(w1 x) * w3 x)``, no biases; the hidden width is ``hidden_dim`` (times
    ``ffn_dim_multiplier`` when given) rounded up to a multiple of ``multiple_of``."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int, ffn_dim_multiplier: float | None,
                 operation_settings: dict[str, Any] | None = None):
        super().__init__()
        settings = operation_settings or {}
        if ffn_dim_multiplier is not None:
            hidden_dim = int(ffn_dim_multiplier * hidden_dim)
        hidden_dim = -(-hidden_dim // multiple_of) * multiple_of
        ops = settings.get("operations") or comfy.ops.disable_weight_init
        where = {"device": settings.get("device"), "dtype": settings.get("dtype")}
        self.w1 = ops.Linear(dim, hidden_dim, bias=False, **where)
        self.w2 = ops.Linear(hidden_dim, dim, bias=False, **where)
        self.w3 = ops.Linear(dim, hidden_dim, bias=False, **where)

    def _forward_silu_gating(self, x1: Tensor, x3: Tensor) -> Tensor:
        return F.silu(x1) * x3

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self._forward_silu_gating(self.w1(x), self.w3(x)))
