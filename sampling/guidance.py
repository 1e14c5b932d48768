"""Classifier-free guidance as a `Denoiser` wrapper over a raw model function.

The model function contract (what a model wrapper in `models/` provides):

    model_fn(x_in, timestep, inputs) -> raw output
      x_in:     [N, C, h, w] latent already scaled by c_in = model_sampling.input_scale(sigma)
      timestep: [N] float, model_sampling.timestep(sigma) (the UNet's 0..999; sigma * 1000 for flow)
      inputs:   dict of conditioning tensors batched to N (e.g. "c_crossattn": [N, 77, 768])
      output:   what the model predicts (eps, v, x0 or flow velocity); model_sampling.prediction maps it to x0

So samplers stay model-agnostic (they see sigmas and x0 only) and the model sees what it was trained on.

Guidance follows Ho & Salimans 2022 ("Classifier-free diffusion guidance", eq. 6) on x0:
x0 = x0_uncond + cfg * (x0_cond - x0_uncond); with cfg == 1 the unconditional pass is skipped.
Conditioning entries (`Cond`) carry an area, a mask, a strength and a sampling-progress range; all
entries of cond and uncond that can share a forward pass are batched into one call, split into several
calls when the optional `fits(input_shape)` callable says a batch would not fit in memory (ComfyUI
`calc_cond_batch`). Concatenating or averaging conditionings is the nodes' job, not this module's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .model_sampling import ModelSampling

ModelFn = Callable[[Tensor, Tensor, dict], Tensor]
FitsFn = Callable[[tuple[int, ...]], bool]

FEATHER_PX = 8   # ComfyUI blends area conditioning over up to 8 latent pixels (a quarter of the side) at inner edges


@dataclass(frozen=True)
class Cond:
    """One conditioning entry. `area` is (height, width, y, x) in latent pixels, or a 5-tuple
    ("percentage", h, w, y, x) of fractions; `mask` is [H, W] or [B, H, W] (any size, resized)."""
    inputs: dict = field(default_factory=dict)
    area: tuple | None = None
    strength: float = 1.0
    mask: Tensor | None = None
    mask_strength: float = 1.0
    is_area_set_to_mask_bounds: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    sigma_start: float = float("inf")     # filled by `prepare_conds`
    sigma_end: float = 0.0
    control: object | None = None         # an opaque control (diffusion.controlnet): entries batch only with
                                          # entries of the same control, which the model function gets as
                                          # inputs["control"]
    model_patch: object | None = None     # an opaque per-entry model patch (diffusion.gligen's boxes, ComfyUI's
                                          # "gligen" option): batched only with the same patch, which the
                                          # model function gets as inputs["model_patch"]
    hooks: object | None = None           # an opaque group of weight hooks (diffusion.hooks, ComfyUI's "hooks"):
                                          # batched only with the same group, which the model function gets
                                          # as inputs["hooks"]
    is_default: bool = False              # ComfyUI's "default" entry: weighted by what the list's other entries
                                          # leave uncovered (1 - their summed weights, floored at 0)


def conds_from_conditioning(conditioning: Sequence) -> list[Cond]:
    """ComfyUI CONDITIONING ([[cross_attn_tensor, {options}], ...]) -> `Cond`s. Tensor-valued options
    (e.g. "pooled_output") become model inputs under their own name; the cross-attention tensor is
    "c_crossattn"."""
    out = []
    for entry in conditioning:
        tensor, options = entry[0], dict(entry[1]) if len(entry) > 1 else {}
        inputs = {k: v for k, v in options.items() if isinstance(v, Tensor) and k != "mask"}
        if tensor is not None:
            inputs["c_crossattn"] = tensor
        start, end = options.get("start_percent", 0.0), options.get("end_percent", 1.0)
        if "clip_start_percent" in options:          # a scheduled CLIP encoding's range (SetClipHooks)
            start = max(options["clip_start_percent"], start)
            end = min(options.get("clip_end_percent", 1.0), end)
        out.append(Cond(inputs=inputs, area=options.get("area"), strength=options.get("strength", 1.0),
                        mask=options.get("mask"), mask_strength=options.get("mask_strength", 1.0),
                        is_area_set_to_mask_bounds=options.get("set_area_to_bounds", False),
                        start_percent=start, end_percent=end,
                        control=options.get("control"), model_patch=options.get("gligen"),
                        hooks=options.get("hooks"), is_default="default" in options))
    return out


# ---------------------------------------------------------------------------------------------
# Preparing conditioning for a latent size
# ---------------------------------------------------------------------------------------------

def _mask_bounds(mask: Tensor) -> tuple[int, int, int, int] | None:
    ys, xs = torch.where(mask != 0)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0


def _resolve(c: Cond, h: int, w: int, ms: ModelSampling) -> Cond:
    area = c.area
    if area is not None and area[0] == "percentage":
        area = (max(1, round(area[1] * h)), max(1, round(area[2] * w)), round(area[3] * h), round(area[4] * w))
    mask = c.mask
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        if tuple(mask.shape[1:]) != (h, w):
            mask = F.interpolate(mask.unsqueeze(1).float(), size=(h, w), mode="bilinear").squeeze(1)
        if c.is_area_set_to_mask_bounds:
            bounds = _mask_bounds(torch.max(torch.abs(mask), dim=0).values)
            area = bounds if bounds is not None else (8, 8, 0, 0)
    sigma_start = ms.percent_to_sigma(c.start_percent) if c.start_percent is not None else float("inf")
    sigma_end = ms.percent_to_sigma(c.end_percent) if c.end_percent is not None else 0.0
    return replace(c, area=tuple(int(a) for a in area) if area is not None else None, mask=mask,
                   sigma_start=sigma_start, sigma_end=sigma_end)


def _area_inside(a: tuple, outer: tuple) -> bool:
    return all(a[2 + i] >= outer[2 + i] and a[i] + a[2 + i] <= outer[i] + outer[2 + i] for i in range(2))


def _add_same_area(target: list[Cond], c: Cond) -> None:
    """Give `target` an entry with c's area (and c's mask/strength/range) using the inputs of the smallest
    target entry that contains it, so cond and uncond cover the same regions (ComfyUI
    create_cond_with_same_area_if_none)."""
    if c.area is None:
        return
    smallest = None
    for t in target:
        if t.area is not None and _area_inside(c.area, t.area):
            if smallest is None or smallest.area is None or smallest.area[0] * smallest.area[1] > t.area[0] * t.area[1]:
                smallest = t
        elif smallest is None:
            smallest = t
    if smallest is None or smallest.area == c.area:
        return
    target.append(replace(c, inputs=dict(smallest.inputs)))


def prepare_conds(cond_lists: Sequence[Sequence[Cond] | None], latent_shape: Sequence[int],
                  ms: ModelSampling) -> list[list[Cond] | None]:
    """Resolve areas/masks to the latent size, sigma ranges from percents, and mirror areas across lists."""
    h, w = latent_shape[2], latent_shape[3]
    lists = [None if cl is None else [_resolve(c, h, w, ms) for c in cl] for cl in cond_lists]
    for k, cl in enumerate(lists):
        if cl is None:
            continue
        for c in list(cl):
            for kk, other in enumerate(lists):
                if kk != k and other is not None:
                    _add_same_area(other, c)
    return lists


# ---------------------------------------------------------------------------------------------
# Batched evaluation
# ---------------------------------------------------------------------------------------------

def _repeat_to_batch(t: Tensor, n: int) -> Tensor:
    if t.shape[0] > n:
        return t[:n]
    if t.shape[0] < n:
        return t.repeat([math.ceil(n / t.shape[0])] + [1] * (t.ndim - 1))[:n]
    return t


@dataclass
class _Chunk:
    x: Tensor
    mult: Tensor
    inputs: dict
    area: tuple[int, int, int, int]
    control: object | None = None
    model_patch: object | None = None
    entry: tuple[int, int] = (0, 0)       # (cond list, index in it): the same entry at every step
    hooks: object | None = None


def _chunk_for(c: Cond, x: Tensor, sigma: Tensor) -> _Chunk | None:
    """The latent crop, blend weights and inputs of one entry at this sigma (ComfyUI get_area_and_mult):
    an area is clamped to end at the latent's edge; without a mask its weights fall off linearly over
    r = min(FEATHER_PX, crop side // 4) pixels at every edge that is inside the latent."""
    s = float(sigma[0])
    if s > c.sigma_start or s < c.sigma_end:
        return None
    b, _, h, w = x.shape
    ah, aw, ay, ax = c.area if c.area is not None else (h, w, 0, 0)
    ah, aw = min(h - ay, ah), min(w - ax, aw)
    x_crop = x[:, :, ay:ay + ah, ax:ax + aw]
    if c.mask is not None:
        m = c.mask[:x_crop.shape[0], ay:ay + ah, ax:ax + aw].to(x) * c.mask_strength
        mult = m.unsqueeze(1).repeat(x_crop.shape[0] // m.shape[0], x_crop.shape[1], 1, 1) * c.strength
    else:
        mult = torch.ones_like(x_crop) * c.strength
        if c.area is not None:
            r_h, r_w = min(FEATHER_PX, ah // 4), min(FEATHER_PX, aw // 4)
            for t in range(r_h):
                f = (t + 1) / r_h
                if ay != 0:
                    mult[:, :, t:t + 1, :] *= f
                if ah + ay < h:
                    mult[:, :, ah - 1 - t:ah - t, :] *= f
            for t in range(r_w):
                f = (t + 1) / r_w
                if ax != 0:
                    mult[:, :, :, t:t + 1] *= f
                if aw + ax < w:
                    mult[:, :, :, aw - 1 - t:aw - t] *= f
    inputs = {k: _repeat_to_batch(v.to(x.device), b) for k, v in c.inputs.items()}
    return _Chunk(x_crop, mult, inputs, (ah, aw, ay, ax), c.control, c.model_patch, hooks=c.hooks)


def _inputs_compatible(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, ta in a.items():
        s1, s2 = ta.shape, b[k].shape
        if s1 == s2:
            continue
        # cross-attention of different token counts can be padded by repetition up to a 4x ratio
        if len(s1) != 3 or s1[0] != s2[0] or s1[2] != s2[2] or math.lcm(s1[1], s2[1]) // min(s1[1], s2[1]) > 4:
            return False
    return True


def _concat_inputs(dicts: list[dict]) -> dict:
    out = {}
    for k in dicts[0]:
        ts = [d[k] for d in dicts]
        if ts[0].ndim == 3:
            n = math.lcm(*[t.shape[1] for t in ts])
            ts = [t.repeat(1, n // t.shape[1], 1) if t.shape[1] < n else t for t in ts]
        out[k] = torch.cat(ts)
    return out


def model_x0(model_fn: ModelFn, ms: ModelSampling) -> Callable[[Tensor, Tensor, dict], Tensor]:
    """(x, sigma[N], inputs) -> x0 by way of the raw model: scale the input, map sigma to the model's
    timestep, and turn the prediction into x0."""
    def apply(x: Tensor, sigma: Tensor, inputs: dict) -> Tensor:
        c_in = ms.input_scale(sigma).reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)).to(x)
        out = model_fn(x * c_in, ms.timestep(sigma).float(), inputs)
        return ms.prediction.to_x0(out, x, sigma)
    return apply


def _default_chunks(defaults: list[tuple[Cond, int, int]], to_run: list[tuple[_Chunk, int]], x: Tensor,
                    sigma: Tensor) -> list[tuple[_Chunk, int]]:
    """Chunks of the "default" entries: each list's default entries are weighted by relu(1 - the summed
    weights of that list's other entries at this step), and skipped where that is zero everywhere
    (ComfyUI finalize_default_conds)."""
    lists = {li for _, li, _ in defaults}
    left = {li: torch.ones_like(x) for li in lists}
    for chunk, li in to_run:
        if li in left:
            ah, aw, ay, ax = chunk.area
            left[li][:, :, ay:ay + ah, ax:ax + aw] -= chunk.mult
    out = []
    for li in lists:
        torch.relu_(left[li])
    for c, li, ci in defaults:
        if torch.max(left[li]) == 0.0:
            continue
        chunk = _chunk_for(c, x, sigma)
        if chunk is None:
            continue
        ah, aw, ay, ax = chunk.area
        chunk.mult = left[li][:, :, ay:ay + ah, ax:ax + aw]
        chunk.entry = (li, ci)
        out.append((chunk, li))
    return out


def calc_cond_batch(apply: Callable[[Tensor, Tensor, dict], Tensor], cond_lists: Sequence[Sequence[Cond] | None],
                    x: Tensor, sigma: Tensor, fits: FitsFn | None = None) -> list[Tensor]:
    """x0 for each list of conds (area-weighted average of its entries); entries of all lists that can
    share a forward pass are batched, as many per call as `fits` allows. `None` lists yield zeros."""
    outs = [torch.zeros_like(x) for _ in cond_lists]
    counts = [torch.ones_like(x) * 1e-37 for _ in cond_lists]
    to_run: list[tuple[_Chunk, int]] = []
    defaults: list[tuple[Cond, int, int]] = []
    for li, conds in enumerate(cond_lists):
        for ci, c in enumerate(conds or ()):
            if c.is_default:
                defaults.append((c, li, ci))
                continue
            chunk = _chunk_for(c, x, sigma)
            if chunk is not None:
                chunk.entry = (li, ci)
                to_run.append((chunk, li))
    if defaults:
        to_run += _default_chunks(defaults, to_run, x, sigma)
    while to_run:
        first = to_run[0][0]
        compatible = [k for k, (c, _) in enumerate(to_run)
                      if c.x.shape == first.x.shape and c.control is first.control
                      and c.model_patch is first.model_patch and c.hooks is first.hooks
                      and _inputs_compatible(c.inputs, first.inputs)]
        compatible.reverse()
        chosen = compatible[:1]
        for i in range(1, len(compatible) + 1):
            candidate = compatible[:len(compatible) // i]
            shape = (len(candidate) * first.x.shape[0], *first.x.shape[1:])
            if fits is None or fits(shape):
                chosen = candidate
                break
        batch = [to_run.pop(k) for k in chosen]
        x_in = torch.cat([c.x for c, _ in batch])
        inputs = _concat_inputs([c.inputs for c, _ in batch])
        # which list each chunk comes from (0 positive, 1 negative), for patches (ComfyUI cond_or_uncond)
        # and which entry of that list (ComfyUI's per-cond "uuids": step caches keep one state per entry)
        inputs["transformer_options"] = {"cond_or_uncond": [li for _, li in batch], "sigmas": sigma,
                                         "uuids": [c.entry for c, _ in batch]}
        if first.control is not None:
            inputs["control"] = first.control
        if first.model_patch is not None:
            inputs["model_patch"] = first.model_patch
        if first.hooks is not None:
            inputs["hooks"] = first.hooks
        out = apply(x_in, torch.cat([sigma] * len(batch)), inputs)
        for o, (c, li) in zip(out.chunk(len(batch)), batch):
            ah, aw, ay, ax = c.area
            outs[li][:, :, ay:ay + ah, ax:ax + aw] += o * c.mult
            counts[li][:, :, ay:ay + ah, ax:ax + aw] += c.mult
    return [o / n for o, n in zip(outs, counts)]


# ---------------------------------------------------------------------------------------------
# CFG
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CfgArgs:
    """What a CFG function sees. `conds` are the prepared (positive, negative) Cond lists and
    `evaluate(cond_lists, x, sigma, transformer_options)` runs the model again on them with other
    per-call patch options (SAG/PAG-style guidance): list of x0, None lists giving zeros."""
    x: Tensor
    sigma: Tensor
    cond_x0: Tensor
    uncond_x0: Tensor
    cond_scale: float
    conds: tuple = ()
    evaluate: Callable | None = None
    # recomputes cond_x0 (the same conds, x and sigma) under whatever model-call options are in force;
    # post-CFG hooks such as Skip Layer Guidance use it for their extra pass
    cond_denoise: Callable[[], Tensor] | None = None


CfgFunction = Callable[[CfgArgs], Tensor]          # -> guided x0
PostCfgFunction = Callable[[CfgArgs, Tensor], Tensor]  # (args, guided x0) -> x0
PreCfgFunction = Callable[[CfgArgs], tuple[Tensor, Tensor]]  # args -> (cond_x0, uncond_x0) before CFG


def plain_cfg(a: CfgArgs) -> Tensor:
    """Ho & Salimans 2022, eq. 6, on x0."""
    return a.uncond_x0 + (a.cond_x0 - a.uncond_x0) * a.cond_scale


def rescale_cfg(multiplier: float = 0.7) -> CfgFunction:
    """Lin et al. 2023 ("Common diffusion noise schedules ...", section 3.4, eq. 15-16): rescale the
    guided v-prediction to the std of the conditional one, then mix with `multiplier` (ComfyUI
    RescaleCFG: done in v space whatever the model's prediction type)."""
    def fn(a: CfgArgs) -> Tensor:
        s = a.sigma.reshape(a.sigma.shape[:1] + (1,) * (a.x.ndim - 1))
        x_vp = a.x / (s * s + 1.0)
        # v-prediction of each branch, from its x0 (Salimans & Ho 2022, appendix D, VE form)
        v_cond = (x_vp - a.cond_x0) * (s ** 2 + 1.0) ** 0.5 / s
        v_uncond = (x_vp - a.uncond_x0) * (s ** 2 + 1.0) ** 0.5 / s
        v_cfg = v_uncond + a.cond_scale * (v_cond - v_uncond)
        ro_pos = torch.std(v_cond, dim=tuple(range(1, v_cond.ndim)), keepdim=True)
        ro_cfg = torch.std(v_cfg, dim=tuple(range(1, v_cfg.ndim)), keepdim=True)
        v_final = multiplier * v_cfg * (ro_pos / ro_cfg) + (1.0 - multiplier) * v_cfg
        return x_vp - v_final * s / (s * s + 1.0) ** 0.5
    return fn


class CFGDenoiser:
    """A `Denoiser` (x, sigma) -> guided x0; `with_uncond` also returns the unconditional x0 (CFG++).

    `positive`/`negative` are lists of `Cond`; `latent_shape` fixes area/mask resolution."""

    def __init__(self, model_fn: ModelFn, ms: ModelSampling, positive: Sequence[Cond], negative: Sequence[Cond] | None,
                 cfg: float, latent_shape: Sequence[int], *, fits: FitsFn | None = None,
                 cfg_function: CfgFunction = plain_cfg, post_cfg: Sequence[PostCfgFunction] = (),
                 pre_cfg: Sequence[PreCfgFunction] = ()) -> None:
        self.model_fn, self.ms = model_fn, ms
        self.apply = model_x0(model_fn, ms)
        self.positive, self.negative = prepare_conds([positive, negative or []], latent_shape, ms)
        self.cfg = cfg
        self.fits = fits
        self.cfg_function = cfg_function
        self.post_cfg = tuple(post_cfg)
        self.pre_cfg = tuple(pre_cfg)

    @property
    def is_uncond_skipped(self) -> bool:
        return (math.isclose(self.cfg, 1.0) and not self.post_cfg and not self.pre_cfg
                and self.cfg_function is plain_cfg)

    def evaluate(self, cond_lists: Sequence, x: Tensor, sigma: Tensor, transformer_options: dict | None = None):
        """x0 of each Cond list with other per-call patch options (the model function's `with_options`)."""
        model_fn = self.model_fn
        if transformer_options is not None and hasattr(model_fn, "with_options"):
            model_fn = model_fn.with_options(transformer_options)
        return calc_cond_batch(model_x0(model_fn, self.ms), cond_lists, x, sigma, self.fits)

    def _guide(self, x: Tensor, sigma: Tensor, is_uncond_needed: bool) -> tuple[Tensor, Tensor]:
        uncond = None if (self.is_uncond_skipped and not is_uncond_needed) else self.negative
        cond_x0, uncond_x0 = calc_cond_batch(self.apply, [self.positive, uncond], x, sigma, self.fits)
        args = CfgArgs(x, sigma, cond_x0, uncond_x0, self.cfg, (self.positive, uncond), self.evaluate,
                       cond_denoise=lambda: calc_cond_batch(self.apply, [self.positive], x, sigma, self.fits)[0])
        for fn in self.pre_cfg:
            cond_x0, uncond_x0 = fn(args)
            args = replace(args, cond_x0=cond_x0, uncond_x0=uncond_x0)
        x0 = self.cfg_function(args)
        for fn in self.post_cfg:
            x0 = fn(args, x0)
        return x0, uncond_x0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self._guide(x, sigma, is_uncond_needed=False)[0]

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self._guide(x, sigma, is_uncond_needed=True)


class DualCFGDenoiser:
    """Two guidance scales over three conditionings (ComfyUI DualCFGGuider), one batched evaluation:
    regular:  x0 = cfg(middle vs negative, cfg_cond2_negative) + cfg_conds * (positive - middle)
    nested:   x0 = negative + cfg_cond2_negative * (cfg(positive vs middle, cfg_conds) - negative).
    `post_cfg` hooks see the inner cfg(...) step, as in ComfyUI's cfg_function; `with_uncond` (CFG++)
    reports that step's unconditional x0 (negative, or middle when nested)."""

    def __init__(self, model_fn: ModelFn, ms: ModelSampling, positive: Sequence[Cond], middle: Sequence[Cond],
                 negative: Sequence[Cond], cfg_conds: float, cfg_cond2_negative: float, latent_shape: Sequence[int], *,
                 is_nested: bool = False, fits: FitsFn | None = None, cfg_function: CfgFunction = plain_cfg,
                 post_cfg: Sequence[PostCfgFunction] = ()) -> None:
        self.apply = model_x0(model_fn, ms)
        self.negative, self.middle, self.positive = prepare_conds([negative, middle, positive], latent_shape, ms)
        self.cfg_conds, self.cfg_cond2_negative = cfg_conds, cfg_cond2_negative
        self.is_nested = is_nested
        self.fits = fits
        self.cfg_function = cfg_function
        self.post_cfg = tuple(post_cfg)

    def _cfg(self, args: CfgArgs) -> Tensor:
        x0 = self.cfg_function(args)
        for fn in self.post_cfg:
            x0 = fn(args, x0)
        return x0

    def _guide(self, x: Tensor, sigma: Tensor, is_uncond_needed: bool) -> tuple[Tensor, Tensor]:
        negative, middle = self.negative, self.middle
        # ComfyUI's cfg1 optimisation (skipped when CFG++ needs the unconditional x0)
        if not self.is_nested and not is_uncond_needed and math.isclose(self.cfg_cond2_negative, 1.0):
            negative = None
            if math.isclose(self.cfg_conds, 1.0):
                middle = None
        neg_x0, mid_x0, pos_x0 = calc_cond_batch(self.apply, [negative, middle, self.positive], x, sigma, self.fits)
        if self.is_nested:
            text = self._cfg(CfgArgs(x, sigma, pos_x0, mid_x0, self.cfg_conds))
            return neg_x0 + self.cfg_cond2_negative * (text - neg_x0), mid_x0
        guided = self._cfg(CfgArgs(x, sigma, mid_x0, neg_x0, self.cfg_cond2_negative))
        return guided + (pos_x0 - mid_x0) * self.cfg_conds, neg_x0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self._guide(x, sigma, is_uncond_needed=False)[0]

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self._guide(x, sigma, is_uncond_needed=True)
