"""The model patch API shared by built-in nodes and plugins: ComfyUI's model_options shape on a MODEL.

A MODEL clone's `model_options` (DiffusionModel.options) may hold, as in ComfyUI:

- "transformer_options": {"patches": {...}, "patches_replace": {...}} — UNet hooks, see
  models/unet_patches.py for each patch's signature. Set through the DiffusionModel methods
  `set_model_attn1_patch`, `set_model_attn2_replace(fn, "middle", 0)`, `set_model_output_block_patch`...
- "model_function_wrapper": `wrapper(apply_model, {"input", "timestep", "c"}) -> out`.
- "sampler_cfg_function": `fn(args) -> x - guided_x0` with args {"cond", "uncond" (x - x0 of each),
  "cond_denoised", "uncond_denoised", "cond_scale", "input", "sigma", "timestep", "model", "model_options"}.
- "sampler_pre_cfg_function": list of `fn(args) -> [cond_x0, uncond_x0]`, args {"conds", "conds_out",
  "cond_scale", "input", "sigma", "timestep", "model", "model_options"}.
- "sampler_post_cfg_function": list of `fn(args) -> x0`, args {"denoised", "cond", "uncond" (the Cond
  lists), "cond_denoised", "uncond_denoised", "cond_scale", "input", "sigma", "model", "model_options",
  "calc_cond_batch"}. `args["calc_cond_batch"](cond_lists, x, sigma, model_options)` runs the model again
  with other options (ComfyUI's `comfy.samplers.calc_cond_batch(model, ...)`), e.g. PAG's perturbed pass.
- Plexus's own typed forms, used by the built-in nodes: "cfg_function" (sampling.guidance CfgFunction),
  "post_cfg_functions" and "pre_cfg_functions" (tuples of the typed callables).

`guidance_functions(model)` turns all of these into the typed callables sampling.guidance runs;
`transformer_patch(options, ...)` helpers copy on write, so a clone never changes its parent's dicts.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from sampling.guidance import CfgArgs, CfgFunction, PostCfgFunction, PreCfgFunction, plain_cfg

TRANSFORMER_OPTIONS = "transformer_options"


def with_patch(options: dict, name: str, patch: Callable) -> None:
    """Append `patch` to transformer_options["patches"][name] (copy on write)."""
    to = dict(options.get(TRANSFORMER_OPTIONS) or {})
    patches = dict(to.get("patches") or {})
    patches[name] = list(patches.get(name) or []) + [patch]
    to["patches"] = patches
    options[TRANSFORMER_OPTIONS] = to


def with_patch_replace(options: dict, patch: Callable, name: str, block_name: str, number: int,
                       transformer_index: int | None = None) -> None:
    """transformer_options["patches_replace"][name][key] = patch, key (block_name, number[, index])."""
    to = dict(options.get(TRANSFORMER_OPTIONS) or {})
    replace = dict(to.get("patches_replace") or {})
    table = dict(replace.get(name) or {})
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    table[key] = patch
    replace[name] = table
    to["patches_replace"] = replace
    options[TRANSFORMER_OPTIONS] = to


def _comfy_cfg(fn: Callable, model: Any) -> CfgFunction:
    def cfg(a: CfgArgs) -> Tensor:
        args = {"cond": a.x - a.cond_x0, "uncond": a.x - a.uncond_x0, "cond_scale": a.cond_scale,
                "timestep": a.sigma, "input": a.x, "sigma": a.sigma, "cond_denoised": a.cond_x0,
                "uncond_denoised": a.uncond_x0, "model": model, "model_options": model.options}
        return a.x - fn(args)
    return cfg


def _calc_cond_batch(a: CfgArgs) -> Callable:
    def calc(cond_lists, x, sigma, model_options: dict | None = None):
        to = (model_options or {}).get(TRANSFORMER_OPTIONS)
        return a.evaluate(cond_lists, x, sigma, to)
    return calc


def _comfy_post_cfg(fn: Callable, model: Any) -> PostCfgFunction:
    def post(a: CfgArgs, x0: Tensor) -> Tensor:
        cond, uncond = (a.conds + (None, None))[:2]
        args = {"denoised": x0, "cond": cond, "uncond": uncond, "cond_scale": a.cond_scale, "model": model,
                "cond_denoised": a.cond_x0, "uncond_denoised": a.uncond_x0, "sigma": a.sigma,
                "model_options": model.options, "input": a.x, "calc_cond_batch": _calc_cond_batch(a)}
        return fn(args)
    return post


def _comfy_pre_cfg(fn: Callable, model: Any) -> PreCfgFunction:
    def pre(a: CfgArgs) -> tuple[Tensor, Tensor]:
        args = {"conds": list(a.conds), "conds_out": [a.cond_x0, a.uncond_x0], "cond_scale": a.cond_scale,
                "timestep": a.sigma, "input": a.x, "sigma": a.sigma, "model": model,
                "model_options": model.options}
        out = fn(args)
        return out[0], out[1]
    return pre


def guidance_functions(model: Any) -> tuple[CfgFunction, tuple[PostCfgFunction, ...], tuple[PreCfgFunction, ...]]:
    """(cfg_function, post_cfg, pre_cfg) for sampling from a MODEL's options (typed and ComfyUI forms)."""
    options = model.options
    cfg = options.get("cfg_function") or plain_cfg
    if options.get("sampler_cfg_function") is not None:
        cfg = _comfy_cfg(options["sampler_cfg_function"], model)
    pre = tuple(options.get("pre_cfg_functions", ())) + tuple(
        _comfy_pre_cfg(fn, model) for fn in options.get("sampler_pre_cfg_function", ()))
    post = tuple(options.get("post_cfg_functions", ())) + tuple(
        _comfy_post_cfg(fn, model) for fn in options.get("sampler_post_cfg_function", ()))
    return cfg, post, pre
