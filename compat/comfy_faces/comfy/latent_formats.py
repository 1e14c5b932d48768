"""ComfyUI's ``comfy.latent_formats`` for plugins: ``SD15()``, ``SDXL()``, ``SD3()`` give Plexus's latent
formats (sampling.latent_format) with ComfyUI's attribute names (``scale_factor``, ``latent_channels``,
``latent_rgb_factors``, ``process_in`` / ``process_out``); ``isinstance(model.latent_format, SDXL)`` holds
for the MODEL of that family. A family Plexus does not run raises a clear error when instantiated."""
from __future__ import annotations

from sampling import latent_format as _plexus
from sampling.latent_format import LatentFormat as _PlexusFormat


class _FormatMeta(type):
    def __instancecheck__(cls, instance) -> bool:
        if cls is LatentFormat:
            return isinstance(instance, _PlexusFormat)
        return cls._plexus is not None and instance == cls._plexus


class LatentFormat(metaclass=_FormatMeta):
    _plexus: _PlexusFormat | None = None
    latent_channels = 4
    latent_dimensions = 2

    def __new__(cls, *args, **kwargs):
        if cls._plexus is None:
            raise NotImplementedError(f"comfy.latent_formats.{cls.__name__}: Plexus does not run this model family")
        return cls._plexus


# ComfyUI's attribute names on Plexus's format objects
_PlexusFormat.latent_rgb_factors = property(lambda self: [list(r) for r in self.rgb_factors] if self.rgb_factors else None)
_PlexusFormat.latent_rgb_factors_bias = property(lambda self: list(self.rgb_bias) if self.rgb_bias else None)
_PlexusFormat.latent_dimensions = 2
_PlexusFormat.taesd_decoder_name = _PlexusFormat.taesd_decoder_name


class SD15(LatentFormat):
    _plexus = _plexus.SD15


class SDXL(LatentFormat):
    _plexus = _plexus.SDXL


class SD3(LatentFormat):
    _plexus = _plexus.SD3


for _name in ("SDXL_Playground_2_5", "SD_X4", "SC_Prior", "SC_B", "StableAudio1", "Flux", "Mochi", "LTXV",
              "HunyuanVideo", "Cosmos1CV8x8x8", "Wan21", "Wan22", "HunyuanImage21", "ACEAudio", "ChromaRadiance"):
    globals()[_name] = type(_name, (LatentFormat,), {"_plexus": None})
