"""ComfyUI's ``comfy.controlnet`` names for plugins. Plexus has no ControlNet / T2I-Adapter support yet, so
these names exist for imports and subclassing, and raise a clear error when used."""
from __future__ import annotations

from typing import Any

_MESSAGE = "ControlNet is not supported by Plexus yet ({what}); see the ControlNet issue"


class ControlBase:
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(_MESSAGE.format(what=f"comfy.controlnet.{type(self).__name__}"))


class ControlNet(ControlBase):
    pass


class ControlLora(ControlNet):
    pass


class ControlLoraOps:
    pass


class T2IAdapter(ControlBase):
    pass


class StrengthType:
    CONSTANT = 1
    LINEAR_UP = 2


def load_controlnet(ckpt_path: str, model: Any = None, model_options: dict | None = None) -> Any:
    raise NotImplementedError(_MESSAGE.format(what="comfy.controlnet.load_controlnet"))


load_controlnet_state_dict = load_controlnet
load_t2i_adapter = load_controlnet


def broadcast_image_to(tensor, target_batch_size, batched_number):
    raise NotImplementedError(_MESSAGE.format(what="comfy.controlnet.broadcast_image_to"))
