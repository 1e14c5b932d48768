"""SD1.5 VAE decode: the production path (bf16 weights, channels-last latent, plain convolutions) against the
same decode with its convolutions prepacked (models/prepack.py), interleaved, then a profile of the plain decode
by op. Random weights in the real layout (models/testing.py).

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/vae_prepack.py 512
"""
import os, statistics, sys, time, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.testing import module_layout, random_tensor
from models.vae import AutoencoderKL, VAEConfig
from models.prepack import prepacked_convolutions
from torch.profiler import profile, ProfilerActivity
print(os.popen("uptime").read().strip(), flush=True)
config = VAEConfig()
def build():
    with torch.device("meta"):
        vae = AutoencoderKL(config)
    state = {k: random_tensor(k, s, torch.bfloat16, 0) for k, s in module_layout(AutoencoderKL, config, "").items()}
    vae.load_state_dict(state, assign=True)
    return vae.eval().requires_grad_(False)
plain, packed = build(), build()
size = int(sys.argv[1]) if len(sys.argv) > 1 else 512
z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2)).div(0.18215)
z = z.bfloat16().contiguous(memory_format=torch.channels_last)
times = {"plain": [], "packed": []}
with torch.inference_mode(), prepacked_convolutions(packed) as n:
    a = plain.decode(z); b = packed.decode(z)
    print("packed convs", n, "bit-identical", torch.equal(a, b), flush=True)
    for r in range(5):
        for name, m in (("plain", plain), ("packed", packed)):
            t = time.perf_counter(); m.decode(z); times[name].append(time.perf_counter() - t)
        print(r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    print({k: (round(statistics.median(v), 3), round(min(v), 3)) for k, v in times.items()})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        plain.decode(z)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
print(os.popen("uptime").read().strip())
