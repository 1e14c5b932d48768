"""ComfyUI's core node interfaces as test data: which nodes, how a spec is stripped, how two compare.

``tests/data/comfyui_core_specs.json`` holds, for the core nodes Plexus implements or will, the
structure of ComfyUI's ``GET /object_info`` entries (input sections, names and order, widget
types and numeric options, static combo lists, outputs, category, display name) and nothing of
their wording: tooltips, descriptions and placeholders are dropped, and model/file lists are
replaced by a ``{"$file_list": <folder>}`` marker because they depend on the disk.

Refresh it from a running ComfyUI (any machine; ComfyUI itself is never needed by the tests)::

    python -m tests.compat.core_specs --url http://127.0.0.1:8188 --version 0.8.0 --commit <sha>

and the whole core set of a release (``--all`` writes ``tests/data/comfyui_core_specs_0364.json``)::

    python -m tests.compat.core_specs --all --url http://127.0.0.1:8190 --version 0.3.64 --commit a125cd84

``python -m tests.compat.core_specs --coverage`` counts the core nodes Plexus registers.

The same module turns a fixture entry and a Plexus ``NodeRegistry.object_info`` entry into one
canonical form (``canonical``) so the test compares them field by field.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "comfyui_core_specs.json"

CORE_NODES: tuple[str, ...] = (
    "CheckpointLoaderSimple", "VAELoader", "CLIPLoader", "UNETLoader", "CLIPTextEncode", "CLIPSetLastLayer",
    "ConditioningCombine", "ConditioningAverage", "ConditioningConcat", "ConditioningSetArea",
    "ConditioningSetAreaPercentage", "ConditioningSetAreaStrength", "ConditioningSetMask",
    "ConditioningZeroOut", "ConditioningSetTimestepRange", "EmptyLatentImage", "LatentUpscale",
    "LatentUpscaleBy", "LatentFromBatch", "RepeatLatentBatch", "LatentComposite", "LatentCompositeMasked",
    "LatentBlend", "LatentRotate", "LatentFlip", "LatentCrop", "KSampler", "KSamplerAdvanced",
    "SamplerCustom", "SamplerCustomAdvanced", "KSamplerSelect", "BasicScheduler", "KarrasScheduler",
    "ExponentialScheduler", "SplitSigmas", "FlipSigmas", "RandomNoise", "DisableNoise", "BasicGuider",
    "CFGGuider", "DualCFGGuider", "ModelSamplingDiscrete", "RescaleCFG", "VAEDecode", "VAEEncode",
    "VAEDecodeTiled", "VAEEncodeTiled", "VAEEncodeForInpaint", "InpaintModelConditioning",
    "SetLatentNoiseMask", "LoadImage", "LoadImageMask", "SaveImage", "PreviewImage", "ImageScale",
    "ImageScaleBy", "ImageScaleToTotalPixels", "ImageInvert", "ImageBatch", "ImageCrop",
    "ImagePadForOutpaint", "ImageCompositeMasked", "EmptyImage", "SolidMask", "InvertMask", "MaskToImage",
    "ImageToMask", "GrowMask", "SaveLatent", "LoadLatent", "CheckpointSave", "UpscaleModelLoader",
    "ImageUpscaleWithModel", "LoraLoader", "LoraLoaderModelOnly", "HypernetworkLoader", "PrimitiveInt",
    "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
)

# Combos whose choices are files on disk, "<node>.<input>" -> the models/ folder they list.
# VAELoader's list also carries the built-in "pixel_space" and TAESD entries found on disk.
FILE_LISTS: dict[str, str] = {
    "CheckpointLoaderSimple.ckpt_name": "checkpoints",
    "VAELoader.vae_name": "vae",
    "CLIPLoader.clip_name": "text_encoders",
    "UNETLoader.unet_name": "diffusion_models",
    "LoadImage.image": "input",
    "LoadImageMask.image": "input",
    "LoadLatent.latent": "input",
    "UpscaleModelLoader.model_name": "upscale_models",
    "LoraLoader.lora_name": "loras",
    "LoraLoaderModelOnly.lora_name": "loras",
    "HypernetworkLoader.hypernetwork_name": "hypernetworks",
    # Further file lists of the whole core set (ALL_CORE_FIXTURE).
    "LoadImageOutput.image": "output",
    "DualCLIPLoader.clip_name1": "text_encoders",
    "DualCLIPLoader.clip_name2": "text_encoders",
    "TripleCLIPLoader.clip_name1": "text_encoders",
    "TripleCLIPLoader.clip_name2": "text_encoders",
    "TripleCLIPLoader.clip_name3": "text_encoders",
    "QuadrupleCLIPLoader.clip_name1": "text_encoders",
    "QuadrupleCLIPLoader.clip_name2": "text_encoders",
    "QuadrupleCLIPLoader.clip_name3": "text_encoders",
    "QuadrupleCLIPLoader.clip_name4": "text_encoders",
    "ControlNetLoader.control_net_name": "controlnet",
    "DiffControlNetLoader.control_net_name": "controlnet",
    "StyleModelLoader.style_model_name": "style_models",
    "CLIPVisionLoader.clip_name": "clip_vision",
    "unCLIPCheckpointLoader.ckpt_name": "checkpoints",
    "GLIGENLoader.gligen_name": "gligen",
    "CheckpointLoader.config_name": "configs",
    "CheckpointLoader.ckpt_name": "checkpoints",
    "DiffusersLoader.model_path": "diffusers",
    "ImageOnlyCheckpointLoader.ckpt_name": "checkpoints",
    "PhotoMakerLoader.photomaker_model_name": "photomaker",
    "CreateHookLora.lora_name": "loras",
    "CreateHookLoraModelOnly.lora_name": "loras",
    "CreateHookModelAsLora.ckpt_name": "checkpoints",
    "CreateHookModelAsLoraModelOnly.ckpt_name": "checkpoints",
    "Load3D.model_file": "input/3d",
    "Load3DAnimation.model_file": "input/3d",
    "LoadVideo.file": "input",
    "ModelPatchLoader.name": "model_patches",
    # the input folder's subfolders (ComfyUI's folder_paths.get_input_subfolders); the 0.3.64 fixture's
    # two entries were replaced by this marker by hand (that ComfyUI's input folder held "3d")
    "LoadImageSetFromFolderNode.folder": "input/<subfolders>",
    "LoadImageTextSetFromFolderNode.folder": "input/<subfolders>",
}

# The whole core node set of one ComfyUI release (its `nodes` and `comfy_extras` modules; the paid
# cloud nodes of `comfy_api_nodes` are left out), for nodes beyond CORE_NODES. See
# tests/compat/test_all_core_specs.py.
ALL_CORE_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "comfyui_core_specs_0364.json"
CORE_MODULE_PREFIXES = ("nodes", "comfy_extras")

# Widget option keys that describe structure. Everything else (tooltip, placeholder, and any key a
# later ComfyUI adds) is dropped, so the fixture never carries ComfyUI's wording.
OPTION_KEYS = frozenset({
    "default", "min", "max", "step", "round", "multiline", "dynamicPrompts", "forceInput",
    "control_after_generate", "image_upload", "display", "label_on", "label_off", "multiselect",
    "options", "advanced", "lazy", "rawLink", "defaultInput", "image_folder", "allow_batch",
})

# Entry keys that describe structure (description, output_tooltips, python_module are dropped).
ENTRY_KEYS = ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
              "category", "output_node", "deprecated", "experimental")


def _is_combo(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] == "COMBO"


def strip_input(node: str, name: str, spec: Any) -> Any:
    """One input spec of ComfyUI's, free text dropped and a file list replaced by its marker."""
    if isinstance(spec, str):  # hidden inputs are bare strings in some nodes
        return spec
    spec = list(spec)
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    options = {key: value for key, value in options.items() if key in OPTION_KEYS}
    folder = FILE_LISTS.get(f"{node}.{name}")
    if folder is not None:
        if not _is_combo(spec):
            raise ValueError(f"{node}.{name} is listed in FILE_LISTS but is not a combo: {spec!r}")
        marker = {"$file_list": folder}
        if spec[0] == "COMBO":
            options["options"] = marker
        else:
            spec[0] = marker
    elif _is_combo(spec):
        choices = spec[0] if isinstance(spec[0], list) else options.get("options")
        if not choices:
            raise ValueError(f"{node}.{name} is an empty combo: a file list missing from FILE_LISTS?")
    return [spec[0], options] if options else [spec[0]]


def strip_entry(node: str, entry: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's ``/object_info`` entry reduced to its structure."""
    out = {key: entry[key] for key in ENTRY_KEYS if key in entry}
    out["input"] = {section: {name: strip_input(node, name, spec) for name, spec in inputs.items()}
                    for section, inputs in entry.get("input", {}).items()}
    return out


# --- comparison ---------------------------------------------------------------------------------

_FREE_TEXT = frozenset({"tooltip", "placeholder"})


def _canonical_input(spec: Any) -> dict[str, Any]:
    """Either combo spelling (classic ``[[choices], {..}]`` or ``["COMBO", {"options": [..]}]``),
    with or without an empty options dict, in one form: ``{"type", "choices", "options"}``."""
    if isinstance(spec, str):
        return {"type": spec, "choices": None, "options": {}}
    spec = list(spec)
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    options = {key: value for key, value in options.items() if key not in _FREE_TEXT}
    if isinstance(spec[0], (list, dict)):
        kind, choices = "COMBO", spec[0]
    elif spec[0] == "COMBO":
        kind, choices = "COMBO", options.pop("options", None)
    else:
        kind, choices = spec[0], None
    if kind == "COMBO" and options.get("multiselect") is False:
        del options["multiselect"]  # false is the default; classic combos never say it
    return {"type": kind, "choices": choices, "options": options}


def canonical(entry: dict[str, Any]) -> dict[str, Any]:
    """The comparable structure of an ``/object_info`` entry (fixture or Plexus)."""
    entry = json.loads(json.dumps(entry))  # tuples -> lists, as on the wire
    return {
        "input": {section: {name: _canonical_input(spec) for name, spec in inputs.items()}
                  for section, inputs in entry.get("input", {}).items()},
        "input_order": entry.get("input_order", {}),
        "output": entry.get("output", []),
        "output_is_list": entry.get("output_is_list", []),
        "output_name": entry.get("output_name", []),
        "display_name": entry.get("display_name") or entry.get("name"),
        "category": entry.get("category"),
        "output_node": bool(entry.get("output_node", False)),
        "deprecated": bool(entry.get("deprecated", False)),
        "experimental": bool(entry.get("experimental", False)),
    }


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field path: (ComfyUI's value, ours)}`` between two canonical entries. Paths look like
    ``input.required.seed.options.max`` or ``category``; a file-list combo matches any list."""
    found: dict[str, tuple[Any, Any]] = {}
    for key in expected.keys() | actual.keys():
        if key != "input":
            if expected.get(key) != actual.get(key):
                found[key] = (expected.get(key), actual.get(key))
            continue
        want, have = expected["input"], actual["input"]
        for section in want.keys() | have.keys():
            want_s, have_s = want.get(section, {}), have.get(section, {})
            for name in want_s.keys() | have_s.keys():
                path = f"input.{section}.{name}"
                if name not in have_s or name not in want_s:
                    found[path] = (want_s.get(name), have_s.get(name))
                    continue
                a, b = want_s[name], have_s[name]
                if a["type"] != b["type"]:
                    found[f"{path}.type"] = (a["type"], b["type"])
                if isinstance(a["choices"], dict):  # {"$file_list": folder}: contents depend on disk
                    if not isinstance(b["choices"], list):
                        found[f"{path}.choices"] = (a["choices"], b["choices"])
                elif a["choices"] != b["choices"]:
                    found[f"{path}.choices"] = (a["choices"], b["choices"])
                for option in a["options"].keys() | b["options"].keys():
                    if a["options"].get(option) != b["options"].get(option):
                        found[f"{path}.options.{option}"] = (a["options"].get(option),
                                                             b["options"].get(option))
    return found


def load_fixture(path: Path = FIXTURE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --- refreshing the fixture from a running ComfyUI ------------------------------------------------

def build_fixture(object_info: dict[str, Any], *, version: str, commit: str | None) -> dict[str, Any]:
    missing = [name for name in CORE_NODES if name not in object_info]
    if missing:
        raise SystemExit(f"the server does not offer {missing}; start it with every optional "
                         f"dependency of these nodes installed (spandrel for the upscale models)")
    return {
        "_source": {
            "project": "ComfyUI", "version": version, "commit": commit, "endpoint": "GET /object_info",
            "started_with": "--cpu --disable-all-custom-nodes, empty models/ and input/ folders",
            "stripped": "tooltip, description, placeholder, output_tooltips, python_module and every "
                        "widget option outside OPTION_KEYS of tests/compat/core_specs.py; model and "
                        "file lists replaced by {\"$file_list\": <folder>}",
        },
        "nodes": {name: strip_entry(name, object_info[name]) for name in CORE_NODES},
    }


def build_all_core_fixture(object_info: dict[str, Any], *, version: str, commit: str | None) -> dict[str, Any]:
    """Every core node of ``object_info`` (python_module ``nodes`` or ``comfy_extras.*``), stripped."""
    names = sorted(name for name, entry in object_info.items()
                   if str(entry.get("python_module", "")).split(".")[0] in CORE_MODULE_PREFIXES)
    fixture = build_fixture(object_info, version=version, commit=commit)
    fixture["_source"]["selection"] = ("every node whose python_module is `nodes` or `comfy_extras.*` "
                                       "(the comfy_api_nodes cloud nodes are left out)")
    fixture["nodes"] = {name: strip_entry(name, object_info[name]) for name in names}
    return fixture


def coverage_report() -> str:
    """How many of the release's core nodes Plexus registers, and which are missing (by module)."""
    import tempfile

    from execution.registry import NodeRegistry
    from nodes import services
    from nodes.registry import register_builtins
    from storage.folders import Folders

    everything = load_fixture(ALL_CORE_FIXTURE)["nodes"]
    registry = NodeRegistry()
    with tempfile.TemporaryDirectory() as root:
        services.install(services.NodeServices(Folders(Path(root))))
        try:
            register_builtins(registry)
        finally:
            services.install(None)
    have = sorted(name for name in everything if name in registry)
    missing = sorted(name for name in everything if name not in registry)
    lines = [f"Plexus registers {len(have)} of the {len(everything)} core nodes of ComfyUI "
             f"{load_fixture(ALL_CORE_FIXTURE)['_source']['version']} "
             f"({len(registry.names())} node classes in all)", "missing:"]
    lines += [f"  {name}" for name in missing]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--coverage"] or argv == ["--coverage"]:
        print(coverage_report())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true",
                        help="every core node (write ALL_CORE_FIXTURE unless --out is given)")
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI")
    parser.add_argument("--version", required=True, help="ComfyUI version, e.g. 0.8.0")
    parser.add_argument("--commit", default=None, help="the ComfyUI commit it runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with urllib.request.urlopen(f"{args.url.rstrip('/')}/object_info", timeout=60) as response:
        object_info = json.load(response)
    if args.all:
        fixture = build_all_core_fixture(object_info, version=args.version, commit=args.commit)
    else:
        fixture = build_fixture(object_info, version=args.version, commit=args.commit)
    args.out = args.out or (ALL_CORE_FIXTURE if args.all else FIXTURE)
    args.out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(fixture['nodes'])} node specs to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
