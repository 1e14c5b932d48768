"""ComfyUI's ``comfy.model_base`` for plugins: ``ModelType`` and the BaseModel names packs check a MODEL's
``model`` against (``isinstance(model.model, comfy.model_base.SDXL)``), answered from the model's family
(models.detection.ModelConfig). Constructing a BaseModel is not supported (Plexus builds models in its
own loaders)."""
from __future__ import annotations

import enum

import torch

from diffusion.patcher_surface import BaseModelView


class ModelType(enum.Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9


class _FamilyMeta(type):
    def __instancecheck__(cls, instance) -> bool:
        if not isinstance(instance, BaseModelView):
            return False
        if cls.__name__ == "BaseModel":
            return True
        config = instance.model_config
        family, variant = getattr(config, "family", None), str(getattr(config, "variant", "") or "")
        return family in cls._families and (not cls._variants or variant in cls._variants)


class BaseModel(metaclass=_FamilyMeta):
    _families: tuple[str, ...] = ()
    _variants: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"comfy.model_base.{type(self).__name__}(...): Plexus builds models in its "
                                  "own loaders; take a MODEL input instead")


def _family(name: str, families: tuple[str, ...], variants: tuple[str, ...] = ()) -> type:
    return _FamilyMeta(name, (BaseModel,), {"_families": families, "_variants": variants})


SD15 = _family("SD15", ("sd1",))
SD20 = _family("SD20", ("sd2",))
SDXL = _family("SDXL", ("sdxl",))
SDXLRefiner = _family("SDXLRefiner", ("sdxl_refiner",))
SD3 = _family("SD3", ("sd3",))
for _name in ("SVD_img2vid", "Stable_Zero123", "SD_X4Upscaler", "StableCascade_C", "StableCascade_B", "Flux",
              "HunyuanVideo", "LTXV", "WAN21", "Lumina2", "HiDream", "Chroma", "QwenImage", "PixArt", "AuraFlow",
              "HunyuanDiT", "GenmoMochi", "CosmosVideo", "StableAudio1"):
    globals()[_name] = _family(_name, ())


def convert_tensor(extra, dtype, device):
    """A conditioning extra on `device`: float tensors cast to `dtype`, integer ones keep theirs (ComfyUI's
    model_base.convert_tensor, what ControlNets use for their extra conds such as SDXL's `y`)."""
    if not isinstance(extra, torch.Tensor):
        return extra
    if extra.dtype in (torch.int32, torch.int64):
        return extra.to(device)
    return extra.to(device=device, dtype=dtype)
