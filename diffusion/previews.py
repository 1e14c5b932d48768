"""Step previews for the editor: x0 (model space) -> [H, W, 3] uint8.

Made only when the prompt's preview method (ComfyUI's --preview-method, or the editor's per-prompt
``extra_data["preview_method"]``) is not "none", the default. Two kinds:
- TAESD (madebyollin/taesd, "Tiny AutoEncoder for Stable Diffusion", MIT): a ~2 MB decoder that turns a
  model-space latent into an image at full resolution, for the method "taesd" when its decoder file
  (`LatentFormat.taesd_decoder_name`, e.g. `taesd_decoder.safetensors`) is in one of the given folders
  (models/vae_approx);
- otherwise ("auto", "latent2rgb", or "taesd" without its file) the linear latent -> RGB projection of
  sampling.preview (no network at all).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from models.files import load_state_dict
from sampling.preview import latent_to_rgb

log = logging.getLogger(__name__)

Previewer = Callable[[Tensor], Tensor]        # x0 [B, C, h, w] -> [H, W, 3] uint8 (first batch item)
PREVIEW_MAX_PX = 512
TAESD_EXTENSIONS = (".safetensors", ".pth", ".pt")


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class _Clamp(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3                           # soft clamp to (-3, 3)


class _Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus the input, then ReLU (TAESD `Block`, 64 -> 64 channels)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def taesd_decoder(latent_channels: int = 4) -> nn.Sequential:
    """The TAESD decoder; parameter names match the published `taesd_decoder.*` files ("1.weight",
    "3.conv.0.weight", ...). Input: model-space latent [B, C, h, w]; output: image [B, 3, 8h, 8w] in [0, 1]."""
    return nn.Sequential(
        _Clamp(), _conv(latent_channels, 64), nn.ReLU(),
        _Block(64), _Block(64), _Block(64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64), _Block(64), _Block(64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64), _Block(64), _Block(64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64), _conv(64, 3))


class _TaesdCache:
    def __init__(self) -> None:
        self.decoders: dict[tuple, nn.Module] = {}
        self.lock = threading.Lock()


_taesd_cache = _TaesdCache()


def find_taesd_decoder(name: str | None, folders: Sequence[Path]) -> Path | None:
    if not name:
        return None
    for folder in folders:
        for ext in TAESD_EXTENSIONS:
            candidate = Path(folder) / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    return None


def load_taesd_decoder(path: Path, latent_channels: int) -> nn.Module:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, latent_channels)
    with _taesd_cache.lock:
        decoder = _taesd_cache.decoders.get(key)
        if decoder is None:
            decoder = taesd_decoder(latent_channels)
            with load_state_dict(path) as source:
                decoder.load_state_dict({k.removeprefix("decoder.layers."): source[k].float() for k in source})
            decoder = decoder.eval().requires_grad_(False)
            _taesd_cache.decoders = {k: v for k, v in _taesd_cache.decoders.items() if k[0] != key[0]}
            _taesd_cache.decoders[key] = decoder
        return decoder


def taesd_previewer(decoder: nn.Module, max_px: int = PREVIEW_MAX_PX) -> Previewer:
    def preview(x0: Tensor) -> Tensor:
        with torch.inference_mode():
            image = decoder(x0[:1].float().cpu())[0].clamp(0, 1)           # [3, H, W]
        if max(image.shape[-2:]) > max_px:
            scale = max_px / max(image.shape[-2:])
            size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[2] * scale)))
            image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear")[0]
        return image.movedim(0, -1).mul(255).round().to(torch.uint8)
    return preview


def previewer_for(model, folders: Sequence[Path] = (), method: str = "auto") -> Previewer | None:
    """The step previewer for a preview `method` (ComfyUI's --preview-method values): None for "none";
    for "taesd" TAESD when its decoder file is in `folders`, else (with a warning, as ComfyUI) the linear
    projection; "auto" and "latent2rgb" the linear projection (ComfyUI 0.3.64 maps auto to latent2rgb).
    None where the latent format has no projection."""
    if method == "none":
        return None
    fmt = model.latent_format
    if method == "taesd":
        path = find_taesd_decoder(fmt.taesd_decoder_name, folders)
        if path is not None:
            return taesd_previewer(load_taesd_decoder(path, fmt.latent_channels))
        log.warning("TAESD previews asked for, but %s is in none of %s; using the linear preview",
                    fmt.taesd_decoder_name, [str(f) for f in folders])
    if fmt.rgb_factors is None:
        return None
    return lambda x0: latent_to_rgb(x0, fmt, PREVIEW_MAX_PX)
