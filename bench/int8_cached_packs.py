"""Experiment (not a mode): `--int8-unet`'s layers with their oneDNN-packed weights cached per layer, which holds
the weights twice (bf16's RAM again), against the shipped per-call reorder and bf16, at 256² (full-size random
SD1.5, batch 2, 3 interleaved rounds). It shows how much of int8's cost here is the per-call weight reorder.

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/int8_cached_packs.py
"""
import os, statistics, sys, time, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._unet_fixture import build_plexus, random_sd15_unet_state, unet_inputs, Side, time_interleaved
from models import int8_weights as iw
from models.prepack import prepacked_convolutions
print(os.popen("uptime").read().strip(), flush=True)
orig_lp, orig_cp = torch.ops.onednn.qlinear_prepack, torch.ops.onednn.qconv_prepack
CACHE = {}
class Ops:   # stand-in for torch.ops.onednn inside the module, caching the packed weights per weight tensor
    def __getattr__(self, name):
        return getattr(torch.ops.onednn, name)
    def qlinear_prepack(self, w, shape):
        key = ("l", w.data_ptr())
        if key not in CACHE: CACHE[key] = orig_lp(w, shape)
        return CACHE[key]
    def qconv_prepack(self, w, sw, sx, zero, stride, padding, dilation, groups, shape):
        key = ("c", w.data_ptr())   # the packed layout does not depend on the input scale (checked)
        if key not in CACHE: CACHE[key] = orig_cp(w, sw, sx, zero, stride, padding, dilation, groups, shape)
        return CACHE[key]
state = random_sd15_unet_state()
bf16 = build_plexus(state, torch.bfloat16)
int8 = build_plexus(state, torch.bfloat16); iw.store_weights_in_int8(int8, torch.bfloat16)
del state
# how long does re-ordering all weights take?
t = time.perf_counter()
for m in int8.modules():
    if isinstance(m, iw.Int8Linear): orig_lp(m.weight, None)
print("reorder every int8 linear weight: %.2f s" % (time.perf_counter() - t), flush=True)
class Cached:
    def __init__(self, on): self.on = on
    def __enter__(self):
        if self.on: iw.torch = type("T", (), {"ops": type("O", (), {"onednn": Ops()})(), "__getattr__": lambda s, n: getattr(torch, n)})()
    def __exit__(self, *a): iw.torch = torch
with torch.inference_mode(), prepacked_convolutions(bf16):
    for size in (32,):
        x, t, ctx = unet_inputs(size, torch.bfloat16, False)
        sides = {"bf16": Side(lambda: bf16(x, t, ctx)), "int8": Side(lambda: int8(x, t, ctx))}
        def cached():
            with Cached(True):
                return int8(x, t, ctx)
        sides["int8 cached packs"] = Side(cached)
        res = time_interleaved(sides, 3, 1)
        for n, r in res.items():
            print(size * 8, n, "median %.3f min %.3f" % (r.median_s, min(r.times_s)), flush=True)
print("cached packs", len(CACHE))
print(os.popen("uptime").read().strip())
