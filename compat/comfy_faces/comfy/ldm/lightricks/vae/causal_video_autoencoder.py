"""ComfyUI's ``comfy.ldm.lightricks.vae.causal_video_autoencoder`` names for plugins. Plexus has no LTX-Video
VAE, so ``ResnetBlock3D``, ``Encoder`` and ``Decoder`` are classes packs can name, subclass and test with
``isinstance`` (no Plexus model is one), and building one raises a clear error."""
from __future__ import annotations

from torch import nn


class _NotInPlexus(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"comfy.ldm.lightricks.vae.causal_video_autoencoder.{type(self).__name__}: Plexus has no LTX-Video VAE")


class ResnetBlock3D(_NotInPlexus):
    pass


class Encoder(_NotInPlexus):
    pass


class Decoder(_NotInPlexus):
    pass
