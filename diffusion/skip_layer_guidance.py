"""Skip Layer Guidance for DiT models (ComfyUI's SkipLayerGuidanceDiT / SkipLayerGuidanceDiTSimple): an
extra model pass with some transformer blocks passed through unchanged guides the sample away from it.

Inspired by perturbed-attention guidance (Ahn et al. 2024, arXiv:2403.17377); Stability AI's SD3.5
reference sampler ("SLG"). Blocks are skipped through `ksampler.MODEL_CALL_OPTIONS`, which adds keyword
arguments to the model calls made while it is set: an architecture that can skip blocks takes them in its
forward (MM-DiT: `skip_blocks`, its joint = "double" blocks; it has no single-stream blocks, so
`single_layers` do nothing there, as in ComfyUI). A model that cannot skip is refused with a clear error
rather than silently guided by nothing.

    full = with_skip_layer_guidance_dit(model, "7, 8, 9", "", scale=3.0, start_percent=0.01,
                                        end_percent=0.15, rescaling_scale=0.0)
    simple = with_skip_layer_guidance_dit_simple(model, "7, 8, 9", "", 0.0, 1.0)
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

from torch import Tensor

from execution.errors import PlexusError

from .ksampler import MODEL_CALL_OPTIONS
from .objects import DiffusionModel
from .sd3 import parse_layers

# forward keyword of each block kind, for the architectures that take one
_SKIP_KEYWORDS = {"double": "skip_blocks"}


def skip_call_options(model: DiffusionModel, double: list[int], single: list[int], node: str) -> dict:
    """The model-call keywords that skip `double` / `single` blocks of `model`'s architecture."""
    params = inspect.signature(type(model.module).forward).parameters
    options = {}
    if double:
        if _SKIP_KEYWORDS["double"] not in params:
            raise PlexusError("invalid_input", f"{node}: this model ({type(model.module).__name__}) cannot skip "
                              "transformer blocks", "Skip Layer Guidance runs on MM-DiT models (SD3 / SD3.5) here")
        options[_SKIP_KEYWORDS["double"]] = frozenset(double)
    return options


@contextlib.contextmanager
def _skipping(options: dict) -> Iterator[None]:
    token = MODEL_CALL_OPTIONS.set({**MODEL_CALL_OPTIONS.get(), **options})
    try:
        yield
    finally:
        MODEL_CALL_OPTIONS.reset(token)


def _sigma_window(model: DiffusionModel, start_percent: float, end_percent: float) -> tuple[float, float]:
    ms = model.model_sampling
    return float(ms.percent_to_sigma(start_percent)), float(ms.percent_to_sigma(end_percent))


def rescaled(x0: Tensor, cond_x0: Tensor, rescaling_scale: float) -> Tensor:
    """SkipLayerGuidanceDiT's rescaling: x0 times r std(cond) / std(x0) + (1 - r), the stds taken over the
    whole batch (a RescaleCFG-like pull back towards the conditional prediction's spread)."""
    if rescaling_scale == 0:
        return x0
    factor = rescaling_scale * (cond_x0.std() / x0.std()) + (1 - rescaling_scale)
    return x0 * factor


def with_skip_layer_guidance_dit(model: DiffusionModel, double_layers: str, single_layers: str, scale: float,
                                 start_percent: float, end_percent: float, rescaling_scale: float) -> DiffusionModel:
    """While sigma lies in [sigma(end_percent), sigma(start_percent)]: the positive conditioning once more
    with the blocks skipped, x0 += (cond_x0 - skipped_x0) * scale after CFG, then `rescaled`."""
    double, single = parse_layers(double_layers), parse_layers(single_layers)
    if not double and not single:
        return model
    options = skip_call_options(model, double, single, "SkipLayerGuidanceDiT")
    sigma_start, sigma_end = _sigma_window(model, start_percent, end_percent)

    def post_cfg(args, x0: Tensor) -> Tensor:
        s = float(args.sigma.flatten()[0])
        if scale > 0 and options and sigma_end <= s <= sigma_start and args.cond_denoise is not None:
            with _skipping(options):
                skipped = args.cond_denoise()
            x0 = rescaled(x0 + (args.cond_x0 - skipped) * scale, args.cond_x0, rescaling_scale)
        return x0

    twin = model.clone()
    twin.add_post_cfg_function(post_cfg)
    return twin


def with_skip_layer_guidance_dit_simple(model: DiffusionModel, double_layers: str, single_layers: str,
                                        start_percent: float, end_percent: float) -> DiffusionModel:
    """SkipLayerGuidanceDiTSimple: inside the sigma window the *unconditional* branch is evaluated with the
    blocks skipped (no extra guidance term), so CFG guides away from the skipped-layer prediction. Without
    an unconditional branch (cfg 1) nothing changes."""
    double, single = parse_layers(double_layers), parse_layers(single_layers)
    if not double and not single:
        return model
    options = skip_call_options(model, double, single, "SkipLayerGuidanceDiTSimple")
    sigma_start, sigma_end = _sigma_window(model, start_percent, end_percent)

    def pre_cfg(args) -> tuple[Tensor, Tensor]:
        s = float(args.sigma.flatten()[0])
        conds = args.conds
        has_uncond = len(conds) > 1 and conds[1] is not None and len(conds[1]) > 0
        if not options or not has_uncond or args.evaluate is None or not sigma_end <= s <= sigma_start:
            return args.cond_x0, args.uncond_x0
        with _skipping(options):
            (uncond_x0,) = args.evaluate([conds[1]], args.x, args.sigma)
        return args.cond_x0, uncond_x0

    twin = model.clone()
    twin.add_pre_cfg_function(pre_cfg)
    return twin
