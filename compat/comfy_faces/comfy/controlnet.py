"""ComfyUI's ``comfy.controlnet`` names for plugins. Plexus's CONTROL_NET objects are its own (models/controlnet.py,
models/t2i_adapter.py, applied by nodes/builtin/controlnet.py), not ComfyUI's ``ControlBase`` hierarchy with its
``get_control`` / ``pre_run`` / ``cleanup`` protocol, so these classes exist for imports and subclassing
(Advanced-ControlNet defines ``ControlNetAdvanced(ControlNet, ...)`` and friends at import), and building one or
calling a loader raises a clear error."""
from __future__ import annotations

from typing import Any

_MESSAGE = ("{what}: ComfyUI's ControlBase objects are not built in Plexus; its ControlNet / T2I-Adapter nodes "
            "(ControlNetLoader, ControlNetApplyAdvanced) use Plexus's own CONTROL_NET objects")


class ControlBase:
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(_MESSAGE.format(what=f"comfy.controlnet.{type(self).__name__}"))


class ControlNet(ControlBase):
    pass


class ControlNetSD35(ControlNet):
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
