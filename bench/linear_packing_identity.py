"""Is the bf16 SD1.5 UNet forward bit-identical with packed linears (IS_PACKING_LINEARS)? Control: a second plain
bf16 copy of the same weights, and the same model run twice. Full-size random SD1.5, batch 2, 256² and 512².

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/linear_packing_identity.py
"""
import os, sys, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._unet_fixture import build_plexus, random_sd15_unet_state, unet_inputs
from models.prepack import prepacked_convolutions
print(os.popen("uptime").read().strip(), flush=True)
state = random_sd15_unet_state()
a, b, c = (build_plexus(state, torch.bfloat16) for _ in range(3))
del state
for size in (32, 64):
    x, t, ctx = unet_inputs(size, torch.bfloat16, False)
    with torch.inference_mode(), prepacked_convolutions(a), prepacked_convolutions(b), \
            prepacked_convolutions(c, is_packing_linears=True):
        ya, yb, yc = a(x, t, ctx), b(x, t, ctx), c(x, t, ctx)
        ya2 = a(x, t, ctx)
    print(size * 8, "plain==plain copy", torch.equal(ya, yb), "plain==plain again", torch.equal(ya, ya2),
          "plain==packed linears", torch.equal(ya, yc), "max diff", (ya.float() - yc.float()).abs().max().item(),
          "rel", ((ya.float() - yc.float()).norm() / ya.float().norm()).item(), flush=True)
import torch.nn.functional as F
from torch import nn
lin = nn.Linear(320, 320).bfloat16()
xx = torch.randn(8192, 320).bfloat16()
w = torch.ops.mkldnn._reorder_linear_weight(lin.weight, 8192)
y1 = F.linear(xx, lin.weight, lin.bias)
y2 = torch.ops.mkldnn._linear_pointwise(xx, w, lin.bias, "none", [], "")
print("single linear 8192x320->320 equal", torch.equal(y1, y2))
print(os.popen("uptime").read().strip())
