"""LoRA and hypernetwork loaders (ComfyUI's specs): patches recorded on MODEL / CLIP clones.

The loaded checkpoint is shared; each node returns clones carrying its patches, so two graphs with
different LoRAs on one checkpoint never see each other's, and a strength change only re-patches.
"""
from __future__ import annotations

from models import hypernetwork
from models.lora import apply_lora, handles_of, load_lora_state_dict
from nodes import services
from nodes.spec import Combo, Float, Input, Output, node

LORA_DESCRIPTION = ("Adds a LoRA (or LyCORIS) file's weight changes to the model and text encoder, scaled by the "
                    "strengths; chain several loaders to stack them.")


def _load_lora(model, clip, lora_name: str, strength_model: float, strength_clip: float):
    path = services.folders().find("loras", lora_name)
    return apply_lora(model, clip, load_lora_state_dict(path), strength_model, strength_clip, path.name)


@node("LoraLoader", category="loaders", display_name="Load LoRA", description=LORA_DESCRIPTION)
class LoraLoader:
    model = Input("MODEL", tooltip="Model to patch (left unchanged for other graphs).")
    clip = Input("CLIP", tooltip="Text encoder to patch.")
    lora_name = Combo(services.file_list("loras"), tooltip="LoRA file in models/loras.")
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01,
                           tooltip="Scale of the change to the model; negative inverts it.")
    strength_clip = Float(1.0, min=-100.0, max=100.0, step=0.01,
                          tooltip="Scale of the change to the text encoder; negative inverts it.")
    RETURNS = (Output("MODEL", tooltip="Patched model."),
               Output("CLIP", tooltip="Patched text encoder."))

    def run(self, model, clip, lora_name: str, strength_model: float, strength_clip: float) -> tuple:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        new_model, new_clip, _ = _load_lora(model, clip, lora_name, strength_model, strength_clip)
        return (new_model, new_clip)


@node("LoraLoaderModelOnly", category="loaders", description=LORA_DESCRIPTION)
class LoraLoaderModelOnly:
    model = Input("MODEL")
    lora_name = Combo(services.file_list("loras"))
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, lora_name: str, strength_model: float) -> tuple:
        if strength_model == 0:
            return (model,)
        new_model, _, _ = _load_lora(model, None, lora_name, strength_model, 0.0)
        return (new_model,)


@node("HypernetworkLoader", category="loaders")
class HypernetworkLoader:
    model = Input("MODEL")
    hypernetwork_name = Combo(services.file_list("hypernetworks"))
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, hypernetwork_name: str, strength: float) -> tuple:
        path = services.folders().find("hypernetworks", hypernetwork_name)
        patch = hypernetwork.HypernetworkPatch(hypernetwork.read_hypernetwork(path), strength)
        new_model = model.clone()
        holder = handles_of(new_model)[0]
        holder.options = hypernetwork.attach(holder.options, holder.module, patch)
        return (new_model,)
