"""The built-in node modules, in registration order.

Each entry is a module path under ``nodes.builtin``; a module either defines
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` or contains ``@node`` classes
(``nodes.spec.module_mappings`` collects them). Add a module here to ship its nodes; a module that
fails to import is reported at start-up and the others still load. Nothing is imported here.
"""
from __future__ import annotations

BUILTIN_MODULES: tuple[str, ...] = (
    "nodes.builtin.utility",
    "nodes.builtin.latent",
    "nodes.builtin.image",
    "nodes.builtin.loaders",
    "nodes.builtin.conditioning",
    "nodes.builtin.sampling",
    "nodes.builtin.vae",
    "nodes.builtin.lora",
    "nodes.builtin.upscale",
    "nodes.builtin.latent_math",
    "nodes.builtin.image_filters",
    "nodes.builtin.image_transform",
    "nodes.builtin.masks",
    "nodes.builtin.strings",
    "nodes.builtin.logic",
    "nodes.builtin.model_patches_unet",
    "nodes.builtin.sd3",
    "nodes.builtin.sdxl",
    "nodes.builtin.custom_sampling",
    "nodes.builtin.guidance",
    "nodes.builtin.merging",
    "nodes.builtin.flux",
    "nodes.builtin.controlnet",
    "nodes.builtin.preprocessors",
    "nodes.builtin.vision",
    "nodes.builtin.guidance_extra",
    "nodes.builtin.image_advanced",
    "nodes.builtin.model_patches_extra",
    "nodes.builtin.step_cache",
    "nodes.builtin.hooks",
    "nodes.builtin.deep_cache",
    "nodes.builtin.checkpoints_extra",
    "nodes.builtin.api_image",
    "nodes.builtin.families",
    "nodes.builtin.training",
)
