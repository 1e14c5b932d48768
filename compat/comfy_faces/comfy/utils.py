"""ComfyUI's ``comfy.utils`` for plugins: progress bars over the running node's context, file loading
over ``models.files``, resizing over ``imaging.resize``, and the tiled-scale helpers."""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import torch

from execution.protocol import current_context
from imaging import resize as _resize

PROGRESS_BAR_ENABLED = True
_progress_hook: list[Callable | None] = [None]


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Callable | None) -> None:
    """``function(value, total, preview, node_id=None)`` is called on every ProgressBar update."""
    _progress_hook[0] = function


class ProgressBar:
    """``ProgressBar(total)``; ``update(n)`` / ``update_absolute(value, total=None, preview=None)``
    report ``progress`` for the node that created it (through execution.protocol's node context)."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = total
        self.current = 0
        self.context = current_context()
        self.node_id = node_id

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        hook = _progress_hook[0]
        if hook is not None:
            hook(self.current, self.total, preview)
        if self.context is not None:
            self.context.report_progress(self.current, self.total, preview=_as_preview(preview))

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


def _as_preview(preview: Any):
    """ComfyUI's ``("JPEG", PIL image, max_size)`` preview tuple -> execution.protocol.Preview."""
    if preview is None:
        return None
    from execution.protocol import Preview

    if isinstance(preview, Preview):
        return preview
    try:
        import io

        image_type, image, max_size = preview
        if max_size:
            image = image.copy()
            image.thumbnail((max_size, max_size))
        buffer = io.BytesIO()
        image.save(buffer, format=image_type, quality=95)
        return Preview(image_type, buffer.getvalue())
    except Exception:  # a preview a plugin built in another shape is dropped, progress still counts
        return None


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False):
    """A state dict from ``.safetensors`` (memory-mapped) or a pickle (always ``weights_only``)."""
    from models.files import load_state_dict

    source = load_state_dict(ckpt)
    state = {key: source[key] for key in source}
    if device is not None:
        state = {key: value.to(device) for key, value in state.items()}
    if not return_metadata:
        return state
    return state, (dict(source.metadata) if getattr(source, "metadata", None) else None)


def save_torch_file(sd: dict, ckpt: str, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, ckpt, metadata=metadata)


def calculate_parameters(sd: dict, prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix))


def weight_dtype(sd: dict, prefix: str = "") -> torch.dtype | None:
    counts: dict[torch.dtype, int] = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            counts[value.dtype] = counts.get(value.dtype, 0) + value.nelement()
    return max(counts, key=counts.get) if counts else None


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` (or ``[B, C, T, H, W]``) to ``height x width``; ``crop`` "center" keeps
    the aspect ratio (imaging.resize.upscale)."""
    if samples.ndim == 5:
        b, c, t = samples.shape[:3]
        flat = samples.permute(0, 2, 1, 3, 4).reshape(b * t, c, *samples.shape[-2:])
        out = _resize.upscale(flat, width, height, upscale_method, crop)
        return out.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)
    return _resize.upscale(samples, width, height, upscale_method, crop)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _resize.lanczos(samples, width, height)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _resize.bislerp(samples, width, height)


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = math.ceil(batch_size / tensor.shape[dim])
        return tensor.repeat(repeats).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Batch ``batch_size`` by repeating (growing) or evenly picking (shrinking) items."""
    current = tensor.shape[0]
    if current == batch_size:
        return tensor
    if batch_size <= 1:
        return tensor[:batch_size]
    picks = [min(current - 1, round(i * (current - 1) / (batch_size - 1))) for i in range(batch_size)] \
        if batch_size < current else [i % current for i in range(batch_size)]
    return tensor[picks]


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols


@torch.inference_mode()
def tiled_scale(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile_x: int = 64,
                tile_y: int = 64, overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                output_device: str = "cpu", pbar: ProgressBar | None = None) -> torch.Tensor:
    """Apply ``function`` (which scales by ``upscale_amount``) tile by tile over ``[B, C, H, W]``,
    blending the overlaps with a linear feather."""
    b, _, h, w = samples.shape
    out_h, out_w = round(h * upscale_amount), round(w * upscale_amount)
    output = torch.zeros((b, out_channels, out_h, out_w), device=output_device)
    for i in range(b):
        value = torch.zeros((out_channels, out_h, out_w), device=output_device)
        weight = torch.zeros((1, out_h, out_w), device=output_device)
        step_y, step_x = max(1, tile_y - overlap), max(1, tile_x - overlap)
        for y in range(0, max(1, h - overlap), step_y) if h > tile_y else [0]:
            for x in range(0, max(1, w - overlap), step_x) if w > tile_x else [0]:
                y0, x0 = min(y, max(0, h - tile_y)), min(x, max(0, w - tile_x))
                tile = samples[i:i + 1, :, y0:y0 + tile_y, x0:x0 + tile_x]
                scaled = function(tile).to(output_device)[0]                       # [C, th*s, tw*s]
                feather = round(overlap * upscale_amount)
                mask = torch.ones((1, *scaled.shape[-2:]), device=output_device)
                for t in range(min(feather, mask.shape[-1] // 2, mask.shape[-2] // 2)):
                    ramp = (t + 1) / (feather + 1)
                    mask[:, t, :] *= ramp
                    mask[:, -t - 1, :] *= ramp
                    mask[:, :, t] *= ramp
                    mask[:, :, -t - 1] *= ramp
                oy, ox = round(y0 * upscale_amount), round(x0 * upscale_amount)
                value[:, oy:oy + scaled.shape[-2], ox:ox + scaled.shape[-1]] += scaled * mask
                weight[:, oy:oy + scaled.shape[-2], ox:ox + scaled.shape[-1]] += mask
                if pbar is not None:
                    pbar.update(1)
        output[i] = value / weight.clamp(min=1e-8)
    return output


def _scaled(value: float, amount: Any, downscale: bool) -> int:
    """A size or position after scaling by ``amount`` (a number, or a function of the value)."""
    if callable(amount):
        return round(amount(value))
    return round(value / amount) if downscale else round(value * amount)


@torch.inference_mode()
def tiled_scale_multidim(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor],
                         tile: tuple = (64, 64), overlap: Any = 8, upscale_amount: Any = 4, out_channels: int = 3,
                         output_device: str = "cpu", downscale: bool = False, index_formulas: Any = None,
                         pbar: ProgressBar | None = None) -> torch.Tensor:
    """``tiled_scale`` over the last ``len(tile)`` dims of ``[B, C, *dims]`` (video latents: (t, h, w)).
    ``upscale_amount`` / ``overlap`` are per dim or one for all; ``downscale`` divides instead of
    multiplying (encoders); ``index_formulas`` give tile positions in the output where they scale
    differently from sizes (a number or a function per dim). Overlaps blend with a linear feather."""
    dims = len(tile)
    amounts = list(upscale_amount) if isinstance(upscale_amount, (list, tuple)) else [upscale_amount] * dims
    overlaps = list(overlap) if isinstance(overlap, (list, tuple)) else [overlap] * dims
    formulas = (list(index_formulas) if isinstance(index_formulas, (list, tuple))
                else [index_formulas if index_formulas is not None else a for a in amounts])
    formulas = [f if f is not None else a for f, a in zip(formulas, amounts)]
    in_sizes = samples.shape[2:]
    out_sizes = [_scaled(size, amount, downscale) for size, amount in zip(in_sizes, amounts)]
    output = torch.empty((samples.shape[0], out_channels, *out_sizes), device=output_device)
    starts = []
    for size, t, o in zip(in_sizes, tile, overlaps):
        step = max(1, t - o)
        starts.append(sorted({min(p, max(0, size - t)) for p in range(0, max(1, size - o), step)})
                      if size > t else [0])
    for b in range(samples.shape[0]):
        value = torch.zeros((out_channels, *out_sizes), device=output_device)
        weight = torch.zeros((1, *out_sizes), device=output_device)
        for origin in itertools.product(*starts):
            index = (slice(b, b + 1), slice(None)) + tuple(slice(p, p + t) for p, t in zip(origin, tile))
            scaled = function(samples[index].to(samples.device)).to(output_device)[0]
            mask = torch.ones((1, *scaled.shape[1:]), device=output_device)
            for d in range(dims):
                feather = min(_scaled(overlaps[d], amounts[d], downscale), mask.shape[d + 1] // 2)
                for t in range(feather):
                    ramp = (t + 1) / (feather + 1)
                    mask.narrow(d + 1, t, 1).mul_(ramp)
                    mask.narrow(d + 1, mask.shape[d + 1] - t - 1, 1).mul_(ramp)
            region = (slice(None),) + tuple(
                slice(_scaled(p, f, downscale), _scaled(p, f, downscale) + n)
                for p, f, n in zip(origin, formulas, scaled.shape[1:]))
            value[region] += scaled * mask
            weight[region] += mask
            if pbar is not None:
                pbar.update(1)
        output[b] = value / weight.clamp(min=1e-8)
    return output


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    *path, last = attr.split(".")
    for name in path:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: torch.Tensor) -> Any:
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj: Any, attr: str, value: torch.Tensor) -> None:
    get_attr(obj, attr).data.copy_(value)


def get_attr(obj: Any, attr: str) -> Any:
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def reshape_mask(input_mask: torch.Tensor, output_shape: tuple) -> torch.Tensor:
    """A mask ``[H, W]`` / ``[B, H, W]`` / ``[B, 1, H, W]`` resized to ``output_shape`` ``[B, C, H, W]``."""
    mask = input_mask.reshape(-1, 1, *input_mask.shape[-2:])
    mask = torch.nn.functional.interpolate(mask.float(), size=tuple(output_shape[2:]), mode="bilinear")
    mask = mask.repeat(1, output_shape[1], 1, 1) if output_shape[1] > 1 else mask
    return repeat_to_batch_size(mask, output_shape[0])


# --- the LDM <-> diffusers UNet key tables packs build their converters from ------------------------------------
from comfy._unet_key_maps import TRANSFORMER_BLOCKS, UNET_MAP_ATTENTIONS, UNET_MAP_BASIC, UNET_MAP_RESNET  # noqa: E402


def unet_to_diffusers(unet_config: dict) -> dict:
    raise NotImplementedError("comfy.utils.unet_to_diffusers: Plexus converts diffusers UNets in its own loaders "
                              "(models/convert/); ComfyUI's unet_config is not built")
