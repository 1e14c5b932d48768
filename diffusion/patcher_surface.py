"""The rest of ComfyUI's ModelPatcher / VAE / CLIP surface that plugins call on Plexus's MODEL, VAE and CLIP
objects (diffusion.objects), as small mixins over Plexus's own operations.

- `PatcherSurface` (MODEL): `load_device` / `offload_device` (the manager's), `model_dtype()`,
  `memory_required(shape)` (model_management.estimate_working_memory), `model` (a view with ComfyUI's
  BaseModel names: model_sampling, latent_format, model_config, diffusion_model, get_dtype,
  process_latent_in/out), `get_key_patches()`, `add_object_patch` (recorded in the options, read back by
  DiffusionModel.get_model_object), `set_model_denoise_mask_function`, `model_patches_to` (no-op: patches are called
  on the device of their inputs), `model_size()`.
- `VaeSurface` (VAE): `encode(pixels)` / `decode(latents)` / `decode_tiled` / `encode_tiled` over
  diffusion.vae_ops, `spacial_compression_decode()` / `spacial_compression_encode()`.
- `ClipSurface` (CLIP): `tokenize(text)` keeps the text (Plexus tokenizes inside the encoder),
  `encode_from_tokens(tokens, return_pooled=...)` and `encode(text)` over diffusion.conditioning.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class BaseModelView:
    """ComfyUI's `patcher.model` (a BaseModel): the names plugins read, over one DiffusionModel."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    model_sampling = property(lambda self: self._handle.model_sampling)
    latent_format = property(lambda self: self._handle.latent_format)
    model_config = property(lambda self: self._handle.model_config)
    diffusion_model = property(lambda self: self._handle.module)
    device = property(lambda self: self._handle.load_device)
    model_type = property(lambda self: getattr(self._handle.model_sampling, "prediction", None))

    def get_dtype(self) -> torch.dtype:
        return self._handle.model_dtype()

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self._handle.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self._handle.latent_format.process_out(latent)

    def memory_required(self, input_shape: Sequence[int]) -> int:
        return self._handle.memory_required(input_shape)


class PatcherSurface:
    """Mixed into DiffusionModel (needs `.manager`, `.module`, `.options`, `.patches`)."""

    @property
    def load_device(self) -> torch.device:
        return self.manager.device

    @property
    def offload_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def model(self) -> BaseModelView:
        return BaseModelView(self)

    def model_dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def model_size(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())

    def memory_required(self, input_shape: Sequence[int]) -> int:
        from model_management import estimate_working_memory
        return estimate_working_memory(tuple(input_shape), self.model_dtype())

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, tuple]:
        """Weight key -> (the module's weight, then its recorded patches), optionally by prefix."""
        state = self.module.state_dict()
        return {key: (state[key],) + tuple(self.patches.get(key, ())) for key in state
                if filter_prefix is None or key.startswith(filter_prefix)}

    def add_object_patch(self, name: str, obj: Any) -> None:
        """Replace a model object for this clone; `get_model_object(name)` answers it (the options first)."""
        name = name[len("diffusion_model."):] if name.startswith("diffusion_model.") else name
        self.options[name] = obj

    def set_model_denoise_mask_function(self, fn) -> None:
        self.options["denoise_mask_function"] = fn

    def model_patches_to(self, device: Any) -> None:
        """Plexus's patches run on the device of their inputs; nothing to move."""


class VaeSurface:
    """Mixed into Autoencoder: ComfyUI VAE's methods over diffusion.vae_ops."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        from . import vae_ops
        return vae_ops.encode(self, pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from . import vae_ops
        return vae_ops.decode(self, latents)

    def decode_tiled(self, samples: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16,
                     **_: Any) -> torch.Tensor:
        from . import vae_ops
        return vae_ops.decode_tiled(self, samples, tile_px=tile_x * self.downscale_ratio,
                                    overlap_px=overlap * self.downscale_ratio)

    def encode_tiled(self, pixels: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                     **_: Any) -> torch.Tensor:
        from . import vae_ops
        return vae_ops.encode_tiled(self, pixels, tile_px=tile_x, overlap_px=overlap)

    def vae_encode_crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, H, W, C]`` cropped (centred) to a multiple of the downscale ratio, as encode does."""
        from . import vae_ops
        return vae_ops.crop_to_multiple(pixels, self.downscale_ratio)

    def spacial_compression_decode(self) -> int:
        return self.downscale_ratio

    def spacial_compression_encode(self) -> int:
        return self.downscale_ratio


class PromptTokens(dict):
    """What `clip.tokenize(text)` returns in Plexus: the text itself, tokenized inside the encoder."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ClipSurface:
    """Mixed into TextEncoders: ComfyUI CLIP's encode methods over diffusion.conditioning."""

    def tokenize(self, text: str, return_word_ids: bool = False, **_: Any) -> PromptTokens:
        return PromptTokens(text)

    def encode_from_tokens(self, tokens: PromptTokens, return_pooled: bool | str = False, return_dict: bool = False):
        from .conditioning import encode_text
        if not isinstance(tokens, PromptTokens):
            raise TypeError("Plexus's CLIP encodes what clip.tokenize(text) returned; token lists built by "
                            "hand are not supported")
        cond, extra = encode_text(self, tokens.text)[0]
        pooled = extra.get("pooled_output")
        if return_dict:
            return {"cond": cond, **extra}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: PromptTokens, add_dict: dict | None = None) -> list:
        from .conditioning import encode_text
        if not isinstance(tokens, PromptTokens):
            raise TypeError("Plexus's CLIP encodes what clip.tokenize(text) returned")
        return [[cond, {**extra, **(add_dict or {})}] for cond, extra in encode_text(self, tokens.text)]

    def encode(self, text: str):
        return self.encode_from_tokens(self.tokenize(text))
