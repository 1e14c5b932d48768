"""ControlNet / T2I-Adapter nodes (ComfyUI's specs); the work is in diffusion.controlnet."""
from __future__ import annotations

import torch

from diffusion import controlnet
from models.controlnet import UNION_CONTROL_TYPES
from nodes import services
from nodes.spec import Combo, Float, Input, Output, node, optional


def _path(control_net_name: str):
    return services.folders().find("controlnet", control_net_name)


@node("ControlNetLoader", category="loaders", display_name="Load ControlNet Model",
      description="Loads a ControlNet or T2I-Adapter file from models/controlnet (its kind is read from its tensors).")
class ControlNetLoader:
    control_net_name = Combo(services.file_list("controlnet"))
    RETURNS = ("CONTROL_NET",)

    def run(self, control_net_name: str) -> tuple:
        return (controlnet.load_control_file(_path(control_net_name), services.current().model_manager()),)


@node("DiffControlNetLoader", category="loaders", display_name="Load ControlNet Model (diff)",
      description="Loads a ControlNet; a diff ControlNet's weights are added to this model's.")
class DiffControlNetLoader:
    model = Input("MODEL")
    control_net_name = Combo(services.file_list("controlnet"))
    RETURNS = ("CONTROL_NET",)

    def run(self, model, control_net_name: str) -> tuple:
        return (controlnet.load_control_file(_path(control_net_name), services.current().model_manager(),
                                             base_model=model),)


@node("ControlNetApply", category="conditioning/controlnet", display_name="Apply ControlNet (OLD)", deprecated=True)
class ControlNetApply:
    conditioning = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    RETURNS = ("CONDITIONING",)

    def run(self, conditioning, control_net, image: torch.Tensor, strength: float) -> tuple:
        return (controlnet.apply_control_to_one(conditioning, control_net, image, strength=strength),)


@node("ControlNetApplyAdvanced", category="conditioning/controlnet", display_name="Apply ControlNet")
class ControlNetApplyAdvanced:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    image = Input("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    vae = optional(Input("VAE"))
    RETURNS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    def run(self, positive, negative, control_net, image: torch.Tensor, strength: float, start_percent: float,
            end_percent: float, vae=None) -> tuple:
        return controlnet.apply_control(positive, negative, control_net, image, strength=strength,
                                        start_percent=start_percent, end_percent=end_percent, vae=vae)


@node("SetUnionControlNetType", category="conditioning/controlnet", display_name="SetUnionControlNetType")
class SetUnionControlNetType:
    control_net = Input("CONTROL_NET")
    type = Combo(["auto", *UNION_CONTROL_TYPES])
    RETURNS = ("CONTROL_NET",)

    def run(self, control_net, type: str) -> tuple:
        return (controlnet.set_union_type(control_net, type),)


@node("ControlNetInpaintingAliMamaApply", category="conditioning/controlnet", function="apply_inpaint_controlnet",
      display_name="ControlNetInpaintingAliMamaApply")
class ControlNetInpaintingAliMamaApply:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    vae = Input("VAE")
    image = Input("IMAGE")
    mask = Input("MASK")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    RETURNS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    def run(self, positive, negative, control_net, vae, image: torch.Tensor, mask: torch.Tensor, strength: float,
            start_percent: float, end_percent: float) -> tuple:
        return controlnet.apply_inpainting_control(positive, negative, control_net, vae, image, mask, strength=strength,
                                                   start_percent=start_percent, end_percent=end_percent)


@node("ControlNetApplySD3", category="conditioning/controlnet", function="execute",
      display_name="Apply Controlnet with VAE", deprecated=True)
class ControlNetApplySD3:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    control_net = Input("CONTROL_NET")
    vae = Input("VAE")
    image = Input("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    RETURNS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    def run(self, positive, negative, control_net, vae, image: torch.Tensor, strength: float, start_percent: float,
            end_percent: float) -> tuple:
        return controlnet.apply_control(positive, negative, control_net, image, strength=strength,
                                        start_percent=start_percent, end_percent=end_percent, vae=vae)
