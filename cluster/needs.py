"""What a prompt needs resident on a worker: model files and its LoRA set, read from the API prompt.

A pure function over the prompt's inputs: loader nodes name their files in widget inputs
(``ckpt_name``, ``unet_name``, ``clip_name1`` ...). LoRAs are kept apart from the other files: a
worker holding the checkpoint but another LoRA set still pays for re-patching, not for a reload.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Widget inputs of loader nodes that name a model file (ComfyUI's input names).
FILE_INPUTS = frozenset({
    "ckpt_name", "unet_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "clip_name3",
    "clip_name4", "control_net_name", "style_model_name", "gligen_name", "model_name", "hypernetwork_name",
})
LORA_INPUTS = frozenset({"lora_name"})
PIN_KEY = "plexus"  # extra_data["plexus"]["worker"] pins a prompt to one worker


@dataclass(frozen=True)
class ModelNeeds:
    """Model files (checkpoints, UNets, text encoders, VAEs ...) and the LoRA set of one prompt."""

    files: frozenset[str] = frozenset()
    loras: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple[frozenset[str], frozenset[str]]:
        """Prompts with equal keys run on the same loaded models."""
        return self.files, self.loras

    def to_json(self) -> dict[str, list[str]]:
        return {"files": sorted(self.files), "loras": sorted(self.loras)}


def prompt_needs(prompt: Mapping[str, Any]) -> ModelNeeds:
    """The files and LoRAs named by the prompt's nodes (links and non-string values are ignored)."""
    files: set[str] = set()
    loras: set[str] = set()
    for node in prompt.values() if isinstance(prompt, Mapping) else ():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        for name, value in (inputs or {}).items():
            if not isinstance(value, str) or not value:
                continue
            if name in LORA_INPUTS:
                loras.add(value)
            elif name in FILE_INPUTS:
                files.add(value)
    return ModelNeeds(frozenset(files), frozenset(loras))


def pinned_worker(extra_data: Mapping[str, Any] | None) -> str | None:
    """The worker id a prompt's ``extra_data`` pins it to (``{"plexus": {"worker": id}}``), if any."""
    block = (extra_data or {}).get(PIN_KEY)
    worker = block.get("worker") if isinstance(block, Mapping) else None
    return worker if isinstance(worker, str) and worker else None
