"""Weight patches of each LoRA-like format: the difference they add to one weight, and DoRA's rescaling.

Every adapter is a callable `(weight_fp32) -> patched_weight_fp32` at full strength, which is what
`model_management.ModelHandle.add_patches` records; the handle blends it with the base weight by the
user's strength (`lerp(w, fn(w), s)`). The additive formats also offer `add_into(w_fp32, s)`, which
adds `s * delta` in place (for LoRA one fused `addmm_`, no delta tensor at all); the handle uses it when
present. Plain LoRA also offers `row_adder`, the same sum for a block of rows, so the handle can merge
a weight in small chunks. Tensors are moved to the weight's device and computed in float32 when the
weight is patched, never earlier.

Formulas (scale = alpha / rank; 1.0 when the file has no alpha):
- LoRA (Hu et al. 2021, arXiv:2106.09685, eq. 3): delta = scale * up @ down, flattened over the conv
  kernel dims (LyCORIS LoCon: `down` [r, in, kh, kw], `up` [out, r, 1, 1]). With a `lora_mid` [r, r, kh, kw]
  (LoCon's CP/Tucker form for 3x3 convs) delta[o, i, k, l] = scale * sum_mn up[o, m] mid[m, n, k, l] down[n, i].
- LoHa (Hyeon-Woo et al. 2022, FedPara, arXiv:2108.06098, eq. 2): delta = scale * (w1a @ w1b) * (w2a @ w2b)
  (Hadamard product); with Tucker cores t1/t2: w1 = einsum(t1, w1b, w1a) as in LyCORIS `loha.py`, where
  w1a is then [r, out] and w1b [r, in]. rank = w1b.shape[0].
- LoKr (Yeh et al. 2023, LyCORIS, arXiv:2309.14859, sec. 3.3): delta = scale * kron(w1, w2), each factor
  stored whole or as a product `_a @ _b` (w2 optionally with a Tucker core t2); rank = the inner
  dimension of the factorised factor (w2's when both are), scale = 1 when neither is factorised.
- Full difference (LyCORIS "full"/`diff`): delta = diff; `set_weight` replaces the weight.
- DoRA (Liu et al. 2024, arXiv:2402.09353, eq. 5): W' = m * (W + delta) / ||W + delta||, the norm taken
  per output channel when the magnitude `m` has one entry per output channel (PEFT's
  `lora_magnitude_vector` [out], LyCORIS `wd_on_output`) and per input channel otherwise (LyCORIS'
  default `dora_scale` [1, in, 1, 1]). ComfyUI's output-axis branch divides by ||W|| instead of
  ||W + delta|| (Comfy-Org/ComfyUI PR #15458 fixes it); Plexus follows the paper on both axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def _f32(t: Tensor, like: Tensor) -> Tensor:
    return t.to(device=like.device, dtype=torch.float32)


def _scale(alpha: float | None, rank: int | None) -> float:
    return 1.0 if alpha is None or not rank else alpha / rank


@dataclass(frozen=True, eq=False)
class Adapter:
    """A weight patch: `delta(weight)` is what it adds at full strength (already scaled)."""

    name = "adapter"
    source_keys: tuple[str, ...] = ()
    dora_scale: Tensor | None = field(default=None, kw_only=True)

    def delta(self, like: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def add_into(self):
        """`(w_fp32, strength) -> None`: w += strength * delta in place (ModelHandle's fast path for
        additive patches); None for DoRA and `set`, which are not additive and go through lerp."""
        return None if self.dora_scale is not None else self._add_into

    def _add_into(self, weight: Tensor, strength: float) -> None:
        weight.add_(self.delta(weight).reshape(weight.shape), alpha=strength)

    def delta_numel(self) -> int | None:
        """Elements of `delta` (for checking against the target weight before patching), None if unknown."""
        return None

    def __call__(self, weight: Tensor) -> Tensor:
        delta = self.delta(weight).reshape(weight.shape)
        if self.dora_scale is None:
            return weight + delta
        return decompose_weight(weight, delta, _f32(self.dora_scale, weight))


def decompose_weight(weight: Tensor, delta: Tensor, magnitude: Tensor) -> Tensor:
    """DoRA: magnitude * (W + delta) / ||W + delta|| (see the module docstring for the axis rule)."""
    adapted = weight + delta
    eps = torch.finfo(torch.float32).eps
    if weight.ndim >= 2 and magnitude.shape[0] == weight.shape[0] and magnitude.numel() == weight.shape[0]:
        norm = adapted.reshape(weight.shape[0], -1).norm(dim=1)                     # [out]
        shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)                       # [out, 1, ...]
    else:
        norm = adapted.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)     # [in]
        shape = (1, weight.shape[1]) + (1,) * (weight.ndim - 2)                     # [1, in, ...]
    return adapted * (magnitude.reshape(shape) / (norm.reshape(shape) + eps))


@dataclass(frozen=True, eq=False)
class LoRA(Adapter):
    name = "lora"
    up: Tensor = None          # [out, r] or [out, r, 1, 1]
    down: Tensor = None        # [r, in] or [r, in, kh, kw]
    alpha: float | None = None
    mid: Tensor | None = None  # [r, r, kh, kw]

    def delta(self, like: Tensor) -> Tensor:
        up, down = _f32(self.up, like).flatten(1), _f32(self.down, like).flatten(1)   # [out, r], [r, in*k]
        scale = _scale(self.alpha, self.down.shape[0])
        if self.mid is None:
            return (up @ down) * scale                                                 # [out, in*k]
        mid = _f32(self.mid, like)                                                     # [r, r, kh, kw]
        return torch.einsum("mnkl,om,ni->oikl", mid, up, down) * scale                # [out, in, kh, kw]

    def __call__(self, weight: Tensor) -> Tensor:
        if self.mid is not None or self.dora_scale is not None:
            return super().__call__(weight)
        merged = weight.clone()
        self._add_into(merged, 1.0)
        return merged

    def _add_into(self, weight: Tensor, strength: float) -> None:
        if self.mid is not None:
            return super()._add_into(weight, strength)
        # fused w += strength * scale * up @ down: no delta tensor, one pass over the weight
        up, down = _f32(self.up, weight).flatten(1), _f32(self.down, weight).flatten(1)
        weight.view(weight.shape[0], -1).addmm_(up, down, alpha=strength * _scale(self.alpha, self.down.shape[0]))

    @property
    def row_adder(self):
        """`(like, strength) -> add(rows_fp32, start)`: adds rows start.. of strength * delta into a block
        of the weight's rows (ModelHandle's chunked merge); None with a mid core or DoRA."""
        return None if self.mid is not None or self.dora_scale is not None else self._row_adder

    def _row_adder(self, like: Tensor, strength: float):
        up, down = _f32(self.up, like).flatten(1), _f32(self.down, like).flatten(1)   # [out, r], [r, in*k]
        alpha = strength * _scale(self.alpha, self.down.shape[0])

        def add(rows: Tensor, start: int) -> None:                                      # rows: [n, in, ...]
            rows.view(rows.shape[0], -1).addmm_(up[start:start + rows.shape[0]], down, alpha=alpha)
        return add

    def delta_numel(self) -> int:
        if self.mid is None:
            return self.up.shape[0] * self.down.flatten(1).shape[1]
        return self.up.shape[0] * self.down.shape[1] * self.mid.shape[2] * self.mid.shape[3]


def _tucker(core: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """LyCORIS' CP/Tucker rebuild: core [r, r, kh, kw], b [r, in], a [r, out] -> [out, in, kh, kw]."""
    return torch.einsum("ijkl,jr,ip->prkl", core, b, a)


@dataclass(frozen=True, eq=False)
class LoHa(Adapter):
    name = "loha"
    w1a: Tensor = None
    w1b: Tensor = None
    w2a: Tensor = None
    w2b: Tensor = None
    alpha: float | None = None
    t1: Tensor | None = None
    t2: Tensor | None = None

    def delta(self, like: Tensor) -> Tensor:
        f = lambda t: _f32(t, like)
        if self.t1 is not None and self.t2 is not None:
            m1 = _tucker(f(self.t1), f(self.w1b), f(self.w1a))
            m2 = _tucker(f(self.t2), f(self.w2b), f(self.w2a))
        else:
            m1 = f(self.w1a) @ f(self.w1b).flatten(1)                                  # [out, in*k]
            m2 = f(self.w2a) @ f(self.w2b).flatten(1)
        return m1 * m2 * _scale(self.alpha, self.w1b.shape[0])

    def delta_numel(self) -> int:
        if self.t1 is not None:
            return self.w1a.shape[1] * self.w1b.shape[1] * self.t1.shape[2] * self.t1.shape[3]
        return self.w1a.shape[0] * self.w1b.flatten(1).shape[1]


@dataclass(frozen=True, eq=False)
class LoKr(Adapter):
    name = "lokr"
    w1: Tensor | None = None
    w1a: Tensor | None = None
    w1b: Tensor | None = None
    w2: Tensor | None = None
    w2a: Tensor | None = None
    w2b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None

    def _factors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        f = lambda t: _f32(t, like)
        w1 = f(self.w1) if self.w1 is not None else f(self.w1a) @ f(self.w1b)
        if self.w2 is not None:
            w2 = f(self.w2)
        elif self.t2 is not None:
            w2 = _tucker(f(self.t2), f(self.w2b), f(self.w2a))
        else:
            w2 = f(self.w2a) @ f(self.w2b)
        if w2.ndim == 4 and w1.ndim == 2:
            w1 = w1[:, :, None, None]                                                  # [a, b] -> [a, b, 1, 1]
        return w1, w2

    def rank(self) -> int | None:
        if self.w2 is None:
            return self.w2b.shape[0]
        if self.w1 is None:
            return self.w1b.shape[0]
        return None

    def delta(self, like: Tensor) -> Tensor:
        w1, w2 = self._factors(like)
        return torch.kron(w1.contiguous(), w2.contiguous()) * _scale(self.alpha, self.rank())

    def delta_numel(self) -> int:
        w1 = self.w1.numel() if self.w1 is not None else self.w1a.shape[0] * self.w1b.shape[1]
        if self.w2 is not None:
            w2 = self.w2.numel()
        elif self.t2 is not None:
            w2 = self.w2a.shape[1] * self.w2b.shape[1] * self.t2.shape[2] * self.t2.shape[3]
        else:
            w2 = self.w2a.shape[0] * self.w2b.shape[1]
        return w1 * w2


@dataclass(frozen=True, eq=False)
class Diff(Adapter):
    name = "diff"
    diff: Tensor = None

    def delta(self, like: Tensor) -> Tensor:
        return _f32(self.diff, like)

    def delta_numel(self) -> int:
        return self.diff.numel()


@dataclass(frozen=True, eq=False)
class SetWeight(Adapter):
    """Replace the weight (`set_weight`); blended by strength like every other patch."""

    name = "set"
    value: Tensor = None
    add_into = None

    def __call__(self, weight: Tensor) -> Tensor:
        return _f32(self.value, weight).reshape(weight.shape)

    def delta_numel(self) -> int:
        return self.value.numel()


@dataclass(frozen=True, eq=False)
class RowBlocks(Adapter):
    """Patches of row blocks of one weight (or bias): `blocks` = ((start, rows, adapter), ...), each adapter
    sized for weight[start:start + rows] and applied there, in order (diffusers / PEFT `to_q` / `to_k` /
    `to_v` LoRAs of an MM-DiT whose single-file weight fuses them as `qkv`: models/lora/mmdit_keys.py). A
    DoRA block rescales its own rows, as ComfyUI applies a patch to a narrowed weight."""

    name = "rows"
    blocks: tuple = ()

    def __call__(self, weight: Tensor) -> Tensor:
        out = weight.clone()
        for start, rows, adapter in self.blocks:
            out[start:start + rows] = adapter(out[start:start + rows])
        return out

    @property
    def add_into(self):
        return self._add_into if all(a.add_into is not None for _, _, a in self.blocks) else None

    def _add_into(self, weight: Tensor, strength: float) -> None:
        for start, rows, adapter in self.blocks:
            adapter.add_into(weight[start:start + rows], strength)     # a view: rows of a contiguous weight


def _swap_halves(t: Tensor) -> Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first])


@dataclass(frozen=True, eq=False)
class SwapHalves(Adapter):
    """`inner`, written for the weight with its two output-row halves in the other order: applied to the
    swapped weight and swapped back (exact for every format, DoRA too: its norms are per row or summed over
    rows). diffusers' AdaLayerNormContinuous emits (scale, shift) where the single-file adaLN emits (shift,
    scale): the last, pre-only context block of an MM-DiT (models/lora/mmdit_keys.py) and its final layer."""

    name = "swapped"
    inner: Adapter = None

    def __call__(self, weight: Tensor) -> Tensor:
        return _swap_halves(self.inner(_swap_halves(weight)))

    def delta_numel(self) -> int | None:
        return self.inner.delta_numel()

    @property
    def add_into(self):
        return None if self.inner.add_into is None else self._add_into

    def _add_into(self, weight: Tensor, strength: float) -> None:
        swapped = _swap_halves(weight)
        self.inner.add_into(swapped, strength)
        weight.copy_(_swap_halves(swapped))
