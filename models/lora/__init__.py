"""LoRA-like weight patches: format detection, key mapping and patch construction.

- `keys.py`: LoRA module names (kohya, diffusers, PEFT, LyCORIS) -> Plexus weight keys, for the LDM UNet
  (with the diffusers -> LDM block map built from any `UNetConfig`) and the HF-named CLIP text towers.
- `adapters.py`: one patch class per format (LoRA incl. LoCon and 3x3 mid weights, LoHa, LoKr, full
  difference, set) and DoRA's magnitude rescaling, each a `(weight_fp32) -> weight_fp32` callable.
- `loader.py`: a file's keys grouped by module, each group turned into a patch, every unused key reported.

Nothing here touches a model's weights: the node layer records the patches on a
`model_management.ModelHandle` clone, which merges them when it puts the weights on the device.
"""
from models.lora.adapters import Adapter, Diff, LoHa, LoKr, LoRA, SetWeight, decompose_weight
from models.lora.apply import LoraReport, apply_lora, handles_of, patch_handle
from models.lora.keys import (
    diffusers_unet_module_map,
    lora_names_for,
    module_weight_shapes,
    text_encoder_lora_names,
    unet_lora_names,
)
from models.lora.loader import (
    SUFFIX_ROLES,
    PatchSet,
    build_patches,
    is_text_encoder_key,
    load_lora_state_dict,
    log_report,
    split_key,
)

__all__ = [
    "SUFFIX_ROLES",
    "Adapter",
    "Diff",
    "LoHa",
    "LoKr",
    "LoRA",
    "LoraReport",
    "PatchSet",
    "SetWeight",
    "apply_lora",
    "build_patches",
    "decompose_weight",
    "diffusers_unet_module_map",
    "handles_of",
    "is_text_encoder_key",
    "load_lora_state_dict",
    "log_report",
    "lora_names_for",
    "module_weight_shapes",
    "patch_handle",
    "split_key",
    "text_encoder_lora_names",
    "unet_lora_names",
]
