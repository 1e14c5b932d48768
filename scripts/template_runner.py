"""Run an official workflow template end to end on tiny random-weight models.

For one template (its editor workflow and its index entry) whose model family Plexus loads:

1. the workflow becomes a prompt (``execution.workflow.workflow_to_prompt``, as the editor's Run does);
2. every model file a loader widget names is written, under that exact name, as a tiny random-weight file
   in the real key layout of that loader and family (``models.testing`` / ``models.testing_vision``):
   SD1/SD2/SDXL/SD3/FLUX checkpoints, FLUX diffusion models (Fill / Canny / Kontext by name),
   CLIP-L / CLIP-G / T5 text encoders, VAEs, CLIP vision towers, Redux style models, FLUX LoRAs, SD3.5
   ControlNets in Stability's layout (blur / canny / depth by name);
3. every image a LoadImage / LoadImageMask node names is written as a small generated RGBA PNG (its alpha
   holds a transparent box, so the MASK output is not empty);
4. the size widgets are shrunk (width / height 64, batch 1, outpaint pads 16, megapixels 0.01) and the step
   counts cut to 3 (start / end steps scaled alike), so a run takes about a second;
5. the prompt runs through the real Engine; the verdict is pass (it finished and an output node returned
   an image) or fail with the first error.

The templates themselves are not changed beyond those widget values. Files the writer has no layout for
(a model it cannot build) give a failure naming the loader and file, not a guessed file.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execution.errors import PlexusError
from execution.events import EventBus
from execution.executor import Engine, PromptRecord
from execution.registry import NodeRegistry
from execution.workflow import workflow_to_prompt
from storage.folders import Folders
from web.template_catalog import UNSUPPORTED_MODEL_FILES

SIZE = 64                # width / height of every latent and resized image (8 x 8 latents)
MAX_STEPS = 3            # KSamplerAdvanced's 20-of-25 base / refiner split keeps both halves non-empty
MAX_PAD = 16             # ImagePadForOutpaint's pads
SIZE_INPUTS = ("width", "height")
STEP_INPUTS = ("steps",)
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image"}


class NoTinyLayout(Exception):
    """The runner cannot write a tiny file for this loader / family (the run is reported as failed)."""


@dataclass
class RunOutcome:
    ok: bool
    error: str = ""
    images: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    node_seconds: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)   # node id -> the text its UI output shows (PreviewAny)


# --- shrinking -----------------------------------------------------------------------------------------------

def shrink(prompt: dict[str, Any]) -> dict[str, Any]:
    """The prompt with tiny sizes and few steps (widget values only; links are left alone)."""
    for node in prompt.values():
        inputs = node.get("inputs") or {}
        steps = inputs.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > MAX_STEPS:
            new = MAX_STEPS
            for name in ("start_at_step", "end_at_step"):
                value = inputs.get(name)
                if isinstance(value, int) and 0 < value < steps:
                    inputs[name] = max(1, min(new - 1, round(value * new / steps))) if name == "start_at_step" \
                        else max(1, round(value * new / steps))
            inputs["steps"] = new
        for name in SIZE_INPUTS:
            if isinstance(inputs.get(name), int) and not isinstance(inputs[name], bool) and inputs[name] > SIZE:
                inputs[name] = SIZE
        if isinstance(inputs.get("batch_size"), int) and inputs["batch_size"] > 1:
            inputs["batch_size"] = 1
        if isinstance(inputs.get("megapixels"), (int, float)) and inputs["megapixels"] > 0.01:
            inputs["megapixels"] = 0.01
        if node.get("class_type") == "ImagePadForOutpaint":
            for name in ("left", "top", "right", "bottom", "feathering"):
                if isinstance(inputs.get(name), int) and inputs[name] > MAX_PAD:
                    inputs[name] = MAX_PAD
    return prompt


# --- input images --------------------------------------------------------------------------------------------

def write_input_image(path: Path, seed: int = 0) -> None:
    """A 64 x 64 RGBA gradient with a transparent box (LoadImage's MASK is 1 - alpha)."""
    import numpy as np
    from PIL import Image
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgba = np.stack([(xx * 4 + seed * 37) % 256, yy * 4, (xx + yy) * 2, np.full_like(xx, 255)], -1).astype(np.uint8)
    rgba[16:40, 20:44, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgba, "RGBA")
    (image if path.suffix.lower() in (".png", ".webp") else image.convert("RGB")).save(path)   # JPEG: no alpha


def write_inputs(prompt: dict[str, Any], folders: Folders) -> list[str]:
    written = []
    for node in prompt.values():
        widget = IMAGE_LOADERS.get(str(node.get("class_type")))
        name = (node.get("inputs") or {}).get(widget) if widget else None
        if not isinstance(name, str) or not name or ".." in Path(name).parts or Path(name).is_absolute():
            continue
        name = name.split(" [")[0]                      # "x.png [output]" annotations
        path = folders.input / name
        if not path.exists():
            write_input_image(path, seed=len(written))
            written.append(name)
    return written


# --- tiny model files ----------------------------------------------------------------------------------------

def _sd_vae():
    from models.vae import VAEConfig
    return VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1)         # 8x, 4 latent channels


def _text_configs():
    from models.testing import tiny_sd3_spec
    return tiny_sd3_spec().text_configs                                    # clip_l 32, clip_g 32, t5xxl 64


def text_encoder_kind(name: str) -> str:
    lower = name.lower()
    for kind, marks in (("t5xxl", ("t5",)), ("clip_g", ("clip_g", "clipg")), ("clip_l", ("clip_l", "clipl"))):
        if any(m in lower for m in marks):
            return kind
    raise NoTinyLayout(f"text encoder {name!r}: the runner writes clip_l / clip_g / t5xxl files, named so")


def flux_config_for(name: str):
    from models.testing import tiny_flux_config
    lower = name.lower()
    channels = 384 if "fill" in lower else 128 if ("canny" in lower or "depth" in lower) else 64
    return tiny_flux_config(guidance="schnell" not in lower, in_channels=channels)


def write_checkpoint(path: Path, family: str) -> None:
    from models import testing
    if family in ("sd1", "sd2"):
        testing.write_random_checkpoint(path, testing.CheckpointSpec(family, testing.tiny_unet_config(family), _sd_vae()))
    elif family == "sdxl":
        refiner = "refiner" in path.name.lower()
        testing.write_sdxl_checkpoint(path, testing.tiny_sdxl_unet_config(refiner=refiner), refiner=refiner,
                                      text=testing.tiny_sdxl_text_configs(), vae=_sd_vae())
    elif family == "sd3":
        testing.write_random_sd3_checkpoint(path, testing.tiny_sd3_spec(qk_norm="3.5" in path.name))
    elif family == "flux":
        write_flux_checkpoint(path)
    else:
        raise NoTinyLayout(f"checkpoint {path.name!r}: no tiny layout for family {family!r}")


def write_flux_checkpoint(path: Path) -> None:
    """ComfyUI's all-in-one FLUX layout: model.diffusion_model.*, vae.*, text_encoders.{clip_l,t5xxl}.transformer.*."""
    import torch

    from models import testing
    from models.vae import AutoencoderKL
    layout: dict = {k: (s, torch.float32) for k, s in
                    testing.flux_layout(flux_config_for(path.name), "model.diffusion_model.").items()}
    layout.update({k: (s, torch.float32) for k, s in
                   testing.module_layout(AutoencoderKL, testing.flux_vae_config(), "vae.").items()})
    fixed = {}
    for kind in ("clip_l", "t5xxl"):
        for k, v in testing.sd3_text_state(kind, _text_configs()[kind], with_embed_tokens_copy=False).items():
            fixed[f"text_encoders.{kind}.transformer.{k}"] = v
    layout.update({k: (tuple(v.shape), v.dtype) for k, v in fixed.items()})
    testing.write_safetensors_streaming(path, layout, lambda n: fixed[n] if n in fixed else
                                        testing.random_tensor(n.removeprefix("model.diffusion_model."),
                                                              layout[n][0], torch.float32, 0))


def write_flux_lora(path: Path) -> None:
    """A kohya-named FLUX LoRA on the tiny FLUX (double block 0 qkv, single block 0 linear2)."""
    import torch
    from safetensors.torch import save_file
    config = flux_config_for("")
    hidden = config.hidden_size
    mlp = int(hidden * 4)
    g = torch.Generator().manual_seed(0)
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, hidden, generator=g) * 0.1,
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(3 * hidden, 4, generator=g) * 0.1,
               "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0),
               "lora_unet_single_blocks_0_linear2.lora_down.weight": torch.randn(4, hidden + mlp, generator=g) * 0.1,
               "lora_unet_single_blocks_0_linear2.lora_up.weight": torch.randn(hidden, 4, generator=g) * 0.1},
              str(path))


def sd35_control_type(name: str) -> str | None:
    """"blur" / "canny" / "depth" for Stability's SD3.5 ControlNet files (sd3.5_large_controlnet_<kind>),
    written in Stability's layout for the tiny SD3.5 checkpoint (128 wide, pooled 64); None for other names."""
    lower = name.lower()
    if "sd3.5" not in lower or "controlnet" not in lower:
        return None
    return next((kind for kind in ("blur", "canny", "depth") if kind in lower), None)


def write_clip_vision(path: Path, family: str) -> None:
    from models.testing_vision import tiny_clip_vision_config, write_random_clip_vision
    lower = path.name.lower()
    if "sigclip" in lower or "siglip" in lower:
        config = tiny_clip_vision_config(is_siglip=True)
    elif family == "sdxl" or "clip_vision_g" in lower:
        config = tiny_clip_vision_config(projection_dim=1280)             # bigG's image-embedding width
    else:
        config = tiny_clip_vision_config()
    write_random_clip_vision(path, config)


def write_style_model(path: Path, family: str) -> None:
    from models.style_model import StyleModelConfig
    from models.testing_vision import write_random_style_model
    if family != "flux":
        raise NoTinyLayout(f"style model {path.name!r}: the runner writes FLUX Redux only")
    context = _text_configs()["t5xxl"].d_model
    write_random_style_model(path, StyleModelConfig("redux", in_width=128, out_width=context))


def write_model(folders: Folders, kind: str, name: str, role: str, family: str) -> str:
    """Write the tiny file `name` in folder `kind` for loader input `role`; returns its path."""
    from models import testing
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise NoTinyLayout(f"{name!r} is not a plain file name")
    path = folders.paths(kind)[0] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return str(path)
    if kind == "checkpoints":
        write_checkpoint(path, family)
    elif kind == "diffusion_models" and family == "flux":
        testing.write_random_flux(path, flux_config_for(name))
    elif kind == "text_encoders":
        text_kind = text_encoder_kind(name)
        testing.write_random_text_encoder(path, text_kind, _text_configs()[text_kind])
    elif kind == "vae":
        testing.write_random_vae(path, testing.flux_vae_config() if family in ("flux", "sd3") else _sd_vae())
    elif kind == "loras" and family == "flux":
        write_flux_lora(path)
    elif name in UNSUPPORTED_MODEL_FILES:
        raise NoTinyLayout(f"{role}: {name!r} is {UNSUPPORTED_MODEL_FILES[name]}, which Plexus cannot load yet")
    elif kind == "controlnet" and family == "sd3" and sd35_control_type(name):
        testing.write_random_sd35_controlnet(path, testing.sd35_controlnet_config(), control_type=sd35_control_type(name))
    elif kind == "clip_vision":
        write_clip_vision(path, family)
    elif kind == "style_models":
        write_style_model(path, family)
    else:
        raise NoTinyLayout(f"{role}: no tiny {family} layout for a {kind} file ({name!r})")
    folders.invalidate(kind)
    return str(path)


def write_models(prompt: dict[str, Any], registry: NodeRegistry, folders: Folders, family: str) -> list[str]:
    from nodes.spec import file_inputs
    written = []
    for node_id, node in prompt.items():
        class_type = str(node.get("class_type"))
        kinds = file_inputs(registry.get(class_type))
        for input_name, value in (node.get("inputs") or {}).items():
            kind = kinds.get(input_name)
            if kind and kind != "input" and isinstance(value, str) and value:
                written.append(write_model(folders, kind, value, f"{class_type} #{node_id} {input_name}", family))
    return written


# --- the run -------------------------------------------------------------------------------------------------

def _first_error(result) -> str:
    error = result.error or next((data for kind, data in result.messages if kind == "execution_error"), None)
    if not error:
        return f"status {result.status}"
    node = f"{error.get('node_type', '?')} #{error.get('node_id', '?')}"
    return f"{node}: {error.get('exception_type', '')}: {error.get('exception_message', '')}".strip()


def count_images(outputs: dict[str, Any]) -> int:
    return sum(len(ui.get("images") or []) for ui in outputs.values() if isinstance(ui, dict))


def texts_only(outputs: dict[str, Any], output_nodes: list[str]) -> bool:
    """Whether a run that left no image is a text template that finished: every output node it ran
    (PreviewAny, ...) left a text and none of them is an image node (basic_datatype_conversion)."""
    return bool(output_nodes) and all(
        isinstance(outputs.get(node_id), dict) and outputs[node_id].get("text")
        and not outputs[node_id].get("images") for node_id in output_nodes)


def run_tiny(workflow: dict[str, Any], family: str, registry: NodeRegistry, base: Path) -> RunOutcome:
    """Write the tiny files for `workflow` under the base folder `base` and run it; the verdict."""
    from model_management import MemorySettings
    from nodes import services

    started = time.perf_counter()
    folders = Folders(base)
    folders.ensure_dirs()
    previous = services.installed()
    services.install(services.NodeServices(folders, settings=MemorySettings(force_fp32=True)))
    engine = Engine(registry, EventBus())
    try:
        try:
            prompt = shrink(workflow_to_prompt(workflow, registry))
            files = write_models(prompt, registry, folders, family)
            write_inputs(prompt, folders)
        except PlexusError as exc:
            return RunOutcome(False, f"conversion: {exc.message}", seconds=time.perf_counter() - started)
        except NoTinyLayout as exc:
            return RunOutcome(False, f"no tiny model: {exc}", seconds=time.perf_counter() - started)
        checked = engine.validate(prompt)
        if not checked.ok:
            details = [f"#{nid} {entry.get('class_type')}: {e.get('message')}"
                       for nid, entry in (checked.node_errors or {}).items() for e in entry.get("errors", [])]
            return RunOutcome(False, "check: " + ("; ".join(details[:2]) or str(checked.error)),
                              seconds=time.perf_counter() - started, files=files)
        record = PromptRecord(prompt_id=str(uuid.uuid4()), prompt=prompt,
                              extra_data={"extra_pnginfo": {"workflow": workflow}},
                              outputs_to_execute=checked.outputs_to_execute)
        result = engine.execute(record)
        images = count_images(result.outputs)
        seconds = time.perf_counter() - started
        timings = {f"{prompt[n]['class_type']} #{n}": t for n, t in (result.node_timings_s or {}).items() if n in prompt}
        if result.status != "success":
            return RunOutcome(False, _first_error(result), images, seconds, files, timings)
        texts = {node_id: "\n".join(map(str, ui["text"])) for node_id, ui in result.outputs.items()
                 if isinstance(ui, dict) and ui.get("text")}
        if not images and not texts_only(result.outputs, list(checked.outputs_to_execute)):
            return RunOutcome(False, "finished without an output image", 0, seconds, files, timings, texts)
        return RunOutcome(True, "", images, seconds, files, timings, texts)
    finally:
        engine.close()
        services.install(previous)
