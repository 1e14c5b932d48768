"""ComfyUI's ``comfy.cldm.cldm`` for plugins. Plexus's ControlNet network is models.controlnet.ControlNet (built
by its loaders from a state dict, not from ComfyUI's keyword config), so ``ControlNet`` here is the class packs
subclass for their own networks (Advanced-ControlNet's SparseCtrl and CtrLoRA): defining a subclass works,
building one raises a clear error."""
from __future__ import annotations

from torch import nn


class ControlNet(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"comfy.cldm.cldm.{type(self).__name__}: ComfyUI's ControlNet network is not "
                                  "built in Plexus (its ControlNet loader is ControlNetLoader / models.controlnet)")


class ControlledUnetModel(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("comfy.cldm.cldm.ControlledUnetModel is not built in Plexus")
