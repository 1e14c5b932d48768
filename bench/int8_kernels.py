"""Is int8 (dynamic activation quantisation) faster than bf16 on this CPU? The UNet's linear and 3x3
convolution shapes through oneDNN, single kernels, no model.

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/int8_kernels.py

Per shape, median of 7 calls after 2 warm-ups:
- bf16: `F.linear` / `F.conv2d` on bf16 tensors (what the default mode runs; the conv channels-last);
- onednn int8: `torch.ops.onednn.qlinear_pointwise` / `qconv2d_pointwise` on a prepacked per-output-channel
  symmetric int8 weight and a per-tensor asymmetric uint8 activation, bf16 out (the VNNI path inductor's
  x86 quantiser lowers to); `+quant` is the separate cost of quantising the activation each call;
- `_int_mm`: `torch._int_mm` (int8 x int8 -> int32), no scales, for the linear shapes.
Issue 22 asked for int8 as an opt-in weight mode; this decides whether it would be faster here.

`--modules` times the layers `--int8-unet` runs instead (models/int8_weights.py `Int8Linear` / `Int8Conv2d`:
per-call activation quantisation, weight reorder, int8 kernel, rescale) against bf16 `nn.Linear` /
`nn.Conv2d` at the same shapes (wall time; `--threads` to pin the thread count):

    flock /tmp/plexus-heavy.lock .venv/bin/python -W ignore bench/int8_kernels.py --modules
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F

LINEARS = [(8192, 320, 320), (8192, 320, 2560), (8192, 1280, 320), (2048, 640, 640), (2048, 640, 5120),
           (512, 1280, 1280)]                    # tokens x in -> out (SD1.5 at 512², batch 2)
CONVS = [(2, 320, 320, 64), (2, 640, 640, 32), (2, 1280, 1280, 16)]   # batch, in, out, latent side


def median_s(fn, calls: int = 7) -> float:
    fn(), fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel, symmetric: (int8 weight, fp32 scale [out])."""
    dims = tuple(range(1, w.dim()))
    scale = w.float().abs().amax(dim=dims).clamp_min(1e-8) / 127
    q = torch.round(w.float() / scale.view(-1, *[1] * (w.dim() - 1))).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """Per tensor, asymmetric: (uint8, scale, zero point) from this call's min and max."""
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo.clamp(max=0)), float(hi.clamp(min=0))
    scale = max(hi - lo, 1e-8) / 255
    zero = max(0, min(255, int(round(-lo / scale))))
    return torch.quantize_per_tensor(x.float(), scale, zero, torch.quint8).int_repr(), scale, zero


def modules() -> None:
    """bf16 nn.Linear / nn.Conv2d against the Int8 layers --int8-unet converts them to, same weights."""
    import copy
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from models.int8_weights import Int8Conv2d, Int8Linear
    from models.int8_weights import quantize_per_tensor_uint8, quantize_per_token
    from torch import nn
    rows = [("linear", m, k, n) for m, k, n in LINEARS] + [("conv3x3", b, c, o, side) for b, c, o, side in CONVS]
    with torch.inference_mode():
        for row in rows:
            if row[0] == "linear":
                _, m, k, n = row
                layer, x = nn.Linear(k, n).bfloat16(), torch.randn(m, k).bfloat16()
                gflop, label, quant = 2 * m * k * n / 1e9, f"linear {m}x{k}->{n}", quantize_per_token
                int8 = copy.deepcopy(layer)
                Int8Linear.convert(int8)
            else:
                _, b, c, o, side = row
                layer = nn.Conv2d(c, o, 3, padding=1).bfloat16()
                x = torch.randn(b, c, side, side).bfloat16().contiguous(memory_format=torch.channels_last)
                gflop, label, quant = 2 * b * o * c * 9 * side * side / 1e9, f"conv3x3 {b}x{c}->{o} @{side}", \
                    quantize_per_tensor_uint8
                int8 = copy.deepcopy(layer)
                Int8Conv2d.convert(int8)
            bf16_s, int8_s, quant_s = median_s(lambda: layer(x)), median_s(lambda: int8(x)), median_s(lambda: quant(x))
            print(f"{label}: bf16 {bf16_s * 1e3:.1f} ms ({gflop / bf16_s:.0f} GFLOP/s) | Int8 layer "
                  f"{int8_s * 1e3:.1f} ms ({int8_s / bf16_s:.2f}x bf16), of which quantising the input "
                  f"{quant_s * 1e3:.1f} ms", flush=True)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", action="store_true", help="time the Int8 layers, not the bare kernels")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.modules:
        print(torch.__version__, "threads", torch.get_num_threads(), "|",
              os.popen("uptime").read().strip(), flush=True)
        modules()
        print(os.popen("uptime").read().strip())
        return
    torch.manual_seed(0)
    print(torch.__version__, "threads", torch.get_num_threads(), "|", os.popen("uptime").read().strip())
    for m, k, n in LINEARS:
        x, w = torch.randn(m, k).bfloat16(), (torch.randn(n, k) * 0.05).bfloat16()
        bf16_s = median_s(lambda: F.linear(x, w))
        q, scale = quantize_weight(w)
        packed, zeros = torch.ops.onednn.qlinear_prepack(q, None), torch.zeros(n, dtype=torch.long)
        qx, x_scale, x_zero = quantize_activation(x)
        quant_s = median_s(lambda: quantize_activation(x))
        int8_s = median_s(lambda: torch.ops.onednn.qlinear_pointwise(
            qx, x_scale, x_zero, packed, scale, zeros, None, 1.0, 0, torch.bfloat16, "none", [], ""))
        a8, w8 = torch.randint(-127, 127, (m, k), dtype=torch.int8), q.t().contiguous()
        int_mm_s = median_s(lambda: torch._int_mm(a8, w8))
        gflop = 2 * m * k * n / 1e9
        print(f"linear {m}x{k}->{n}: bf16 {bf16_s * 1e3:.2f} ms ({gflop / bf16_s:.0f} GFLOP/s) | onednn int8 "
              f"{int8_s * 1e3:.2f} ms ({gflop / int8_s:.0f} GOP/s) +quant {quant_s * 1e3:.2f} ms | _int_mm "
              f"{int_mm_s * 1e3:.2f} ms ({gflop / int_mm_s:.0f})", flush=True)
    for b, c, o, side in CONVS:
        x = torch.randn(b, c, side, side).bfloat16().contiguous(memory_format=torch.channels_last)
        w = (torch.randn(o, c, 3, 3) * 0.05).bfloat16()
        bf16_s = median_s(lambda: F.conv2d(x, w, padding=1))
        q, scale = quantize_weight(w)
        packed = torch.ops.onednn.qconv_prepack(q, scale, 1.0, 0, [1, 1], [1, 1], [1, 1], 1, None)
        zeros = torch.zeros(o, dtype=torch.long)
        qx, x_scale, x_zero = quantize_activation(x)
        qx = qx.contiguous(memory_format=torch.channels_last)
        quant_s = median_s(lambda: quantize_activation(x))
        int8_s = median_s(lambda: torch.ops.onednn.qconv2d_pointwise(
            qx, x_scale, x_zero, packed, scale, zeros, None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, torch.bfloat16,
            "none", [], ""))
        gflop = 2 * b * o * c * 9 * side * side / 1e9
        print(f"conv3x3 {b}x{c}->{o} @{side}: bf16 {bf16_s * 1e3:.2f} ms ({gflop / bf16_s:.0f} GFLOP/s) | "
              f"onednn int8 {int8_s * 1e3:.2f} ms ({gflop / int8_s:.0f} GOP/s) +quant {quant_s * 1e3:.2f} ms",
              flush=True)
    print(os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
