"""Random LoRA-like files of every format for given target weights, and the formulas they stand for.

Each maker takes {module name as the file spells it: target weight shape} and returns the file's
tensors; the `expected_delta_*` functions compute, independently of models/lora, what a weight of that
shape gains at strength 1.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _randn(*shape: int, scale: float = 0.1) -> Tensor:
    return torch.randn(*shape) * scale


def kohya_lora(targets: dict[str, tuple[int, ...]], rank: int = 4, alpha: float | None = 2.0,
               *, mid: bool = False) -> dict[str, Tensor]:
    """kohya / LoCon: `.lora_down.weight` [r, in(, kh, kw)], `.lora_up.weight` [out, r(, 1, 1)], `.alpha`;
    `mid=True` gives 3x3 convs a `.lora_mid.weight` [r, r, kh, kw] with 1x1 down/up."""
    out = {}
    for name, shape in targets.items():
        if len(shape) == 4:
            o, i, kh, kw = shape
            if mid and kh > 1:
                out[f"{name}.lora_down.weight"] = _randn(rank, i, 1, 1)
                out[f"{name}.lora_mid.weight"] = _randn(rank, rank, kh, kw)
            else:
                out[f"{name}.lora_down.weight"] = _randn(rank, i, kh, kw)
            out[f"{name}.lora_up.weight"] = _randn(o, rank, 1, 1)
        else:
            o, i = shape
            out[f"{name}.lora_down.weight"] = _randn(rank, i)
            out[f"{name}.lora_up.weight"] = _randn(o, rank)
        if alpha is not None:
            out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def expected_delta_lora(file: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    """alpha / rank * up @ down (LoCon mid: up . mid . down contracted over the ranks)."""
    up, down = file[f"{name}.lora_up.weight"].double(), file[f"{name}.lora_down.weight"].double()
    rank = down.shape[0]
    alpha = file.get(f"{name}.alpha")
    scale = (float(alpha) / rank) if alpha is not None else 1.0
    up2 = up.reshape(up.shape[0], rank)
    mid = file.get(f"{name}.lora_mid.weight")
    if mid is not None:
        down2 = down.reshape(rank, -1)                              # [r, in]
        delta = torch.zeros(shape, dtype=torch.float64)
        for o in range(shape[0]):
            for i in range(shape[1]):
                delta[o, i] = (up2[o][:, None, None, None] * mid.double() * down2[:, i][None, :, None, None]).sum((0, 1))
        return delta * scale
    return (up2 @ down.reshape(rank, -1)).reshape(shape) * scale


def peft_lora(targets: dict[str, tuple[int, ...]], rank: int = 4, *, style: str = "peft") -> dict[str, Tensor]:
    """PEFT `lora_A/lora_B.weight`, diffusers `lora.down/up.weight`, or diffusers' old attention
    processors `_lora.down/up.weight` (no alpha: scale 1)."""
    down_suffix, up_suffix = {"peft": (".lora_A.weight", ".lora_B.weight"),
                              "diffusers": (".lora.down.weight", ".lora.up.weight"),
                              "processor": ("_lora.down.weight", "_lora.up.weight")}[style]
    out = {}
    for name, shape in targets.items():
        out[name + down_suffix] = _randn(rank, math.prod(shape[1:])).reshape(rank, *shape[1:])
        out[name + up_suffix] = _randn(shape[0], rank).reshape(shape[0], rank, *([1] * (len(shape) - 2)))
    return out


def expected_delta_peft(file: dict[str, Tensor], name: str, shape: tuple[int, ...], style: str = "peft") -> Tensor:
    down_suffix, up_suffix = {"peft": (".lora_A.weight", ".lora_B.weight"),
                              "diffusers": (".lora.down.weight", ".lora.up.weight"),
                              "processor": ("_lora.down.weight", "_lora.up.weight")}[style]
    up, down = file[name + up_suffix].double(), file[name + down_suffix].double()
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(shape)


def loha(targets: dict[str, tuple[int, ...]], rank: int = 4, alpha: float = 2.0, *, tucker: bool = False) -> dict[str, Tensor]:
    out = {}
    for name, shape in targets.items():
        o, i = shape[0], math.prod(shape[1:])
        if tucker and len(shape) == 4:
            for n in "12":
                out[f"{name}.hada_t{n}"] = _randn(rank, rank, shape[2], shape[3], scale=0.5)
                out[f"{name}.hada_w{n}_a"] = _randn(rank, o, scale=0.5)        # [r, out] in the Tucker form
                out[f"{name}.hada_w{n}_b"] = _randn(rank, shape[1], scale=0.5)  # [r, in]
        else:
            for n in "12":
                out[f"{name}.hada_w{n}_a"] = _randn(o, rank, scale=0.5)
                out[f"{name}.hada_w{n}_b"] = _randn(rank, i, scale=0.5)
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def _tucker_rebuild(t: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """W[p, r, k, l] = sum_ij t[i, j, k, l] b[j, r] a[i, p], written as explicit loops over i, j."""
    out = torch.zeros(a.shape[1], b.shape[1], t.shape[2], t.shape[3], dtype=torch.float64)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            out += a[i][:, None, None, None] * b[j][None, :, None, None] * t[i, j][None, None]
    return out


def expected_delta_loha(file: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    """(w1a @ w1b) * (w2a @ w2b) * alpha / rank (Hadamard product of two low-rank products)."""
    g = lambda k: file[f"{name}.{k}"].double()
    rank = g("hada_w1_b").shape[0]
    scale = float(file[f"{name}.alpha"]) / rank
    if f"{name}.hada_t1" in file:
        m1 = _tucker_rebuild(g("hada_t1"), g("hada_w1_b"), g("hada_w1_a"))
        m2 = _tucker_rebuild(g("hada_t2"), g("hada_w2_b"), g("hada_w2_a"))
        return (m1 * m2 * scale).reshape(shape)
    return ((g("hada_w1_a") @ g("hada_w1_b")) * (g("hada_w2_a") @ g("hada_w2_b")) * scale).reshape(shape)


def _factor(n: int) -> tuple[int, int]:
    a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return a, n // a


def lokr(targets: dict[str, tuple[int, ...]], rank: int = 2, alpha: float = 3.0, *, mode: str = "w2_factored") -> dict[str, Tensor]:
    """LoKr: w1 [o1, i1] whole and w2 [o2, i2(, kh, kw)] as `w2_a @ w2_b` ("w2_factored"), both factored
    ("both_factored"), both whole ("full"), or w2 with a Tucker core ("tucker", convs only)."""
    out = {}
    for name, shape in targets.items():
        o1, o2 = _factor(shape[0])
        i1, i2 = _factor(shape[1])
        kernel = tuple(shape[2:])
        if mode in ("w2_factored", "full", "tucker"):
            out[f"{name}.lokr_w1"] = _randn(o1, i1, scale=0.5)
        else:
            out[f"{name}.lokr_w1_a"] = _randn(o1, rank, scale=0.5)
            out[f"{name}.lokr_w1_b"] = _randn(rank, i1, scale=0.5)
        if mode == "full":
            out[f"{name}.lokr_w2"] = _randn(o2, i2, *kernel, scale=0.5)
        elif mode == "tucker" and kernel:
            out[f"{name}.lokr_t2"] = _randn(rank, rank, *kernel, scale=0.5)
            out[f"{name}.lokr_w2_a"] = _randn(rank, o2, scale=0.5)
            out[f"{name}.lokr_w2_b"] = _randn(rank, i2, scale=0.5)
        else:
            out[f"{name}.lokr_w2_a"] = _randn(o2, rank, scale=0.5)
            out[f"{name}.lokr_w2_b"] = _randn(rank, i2 * math.prod(kernel), scale=0.5)
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def expected_delta_lokr(file: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    """kron(w1, w2) * alpha / rank, rank from the factorised factor (1 when both are whole)."""
    g = lambda k: file[f"{name}.{k}"].double() if f"{name}.{k}" in file else None
    kernel = tuple(shape[2:])
    rank = None
    w1 = g("lokr_w1")
    if w1 is None:
        w1, rank = g("lokr_w1_a") @ g("lokr_w1_b"), g("lokr_w1_b").shape[0]
    w2 = g("lokr_w2")
    if w2 is None:
        rank = g("lokr_w2_b").shape[0]
        if g("lokr_t2") is not None:
            w2 = _tucker_rebuild(g("lokr_t2"), g("lokr_w2_b"), g("lokr_w2_a"))
        else:
            w2 = (g("lokr_w2_a") @ g("lokr_w2_b")).reshape(g("lokr_w2_a").shape[0], -1, *kernel)
    scale = float(file[f"{name}.alpha"]) / rank if rank else 1.0
    # Kronecker product by its definition: block (a, b) of the result is w1[a, b] * w2
    o2, i2 = w2.shape[0], w2.shape[1]
    delta = torch.zeros(w1.shape[0] * o2, w1.shape[1] * i2, *kernel, dtype=torch.float64)
    for a in range(w1.shape[0]):
        for b in range(w1.shape[1]):
            delta[a * o2:(a + 1) * o2, b * i2:(b + 1) * i2] = w1[a, b] * w2
    return delta.reshape(shape) * scale
