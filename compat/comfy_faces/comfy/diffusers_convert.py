"""ComfyUI's ``comfy.diffusers_convert`` names (diffusers -> original key layouts for VAE and text encoders).
Plexus loads single-file checkpoints only and has no diffusers-folder conversion yet: the names exist so
packs that import the module load, and raise a clear error when called."""
from __future__ import annotations

from typing import Any

_MESSAGE = ("Plexus cannot convert diffusers-format state dicts yet (comfy.diffusers_convert.{what}); "
            "use a single-file checkpoint")


def convert_vae_state_dict(vae_state_dict: dict) -> dict:
    raise NotImplementedError(_MESSAGE.format(what="convert_vae_state_dict"))


def convert_text_enc_state_dict(text_enc_dict: dict) -> dict:
    raise NotImplementedError(_MESSAGE.format(what="convert_text_enc_state_dict"))


def convert_text_enc_state_dict_v20(text_enc_dict: dict, prefix: str = "") -> dict:
    raise NotImplementedError(_MESSAGE.format(what="convert_text_enc_state_dict_v20"))


def reshape_weight_for_sd(w: Any, conv3d: bool = False) -> Any:
    """A linear attention weight [out, in] as the 1x1 convolution [out, in, 1, 1] the original VAE stores."""
    return w.reshape(*w.shape, 1, 1, 1) if conv3d else w.reshape(*w.shape, 1, 1)
