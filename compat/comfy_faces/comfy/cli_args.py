"""ComfyUI's ``comfy.cli_args`` for plugins: ``args``, a namespace of ComfyUI's option names answered from
Plexus's parsed command line (``nodes.services`` .args, main.py's flags use ComfyUI's names), then
ComfyUI's defaults for options Plexus does not have; any other name reads as None."""
from __future__ import annotations

import enum
from typing import Any

from nodes import services as _services


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"


_COMFY_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1", "port": 8188, "preview_size": 512, "preview_method": LatentPreviewMethod.NoPreviews,
    "disable_metadata": False, "disable_all_custom_nodes": False, "whitelist_custom_nodes": [],
    "cache_lru": 0, "cache_classic": False, "cache_none": False, "verbose": "INFO", "log_stdout": False,
    "front_end_version": "comfyanonymous/ComfyUI@latest", "front_end_root": None, "multi_user": False,
    "enable_cors_header": None, "max_upload_size": 100, "cuda_device": None, "default_device": None,
    "fast": set(), "deterministic": False, "dont_print_server": False, "quick_test_for_ci": False,
    "windows_standalone_build": False, "disable_smart_memory": False, "disable_xformers": False,
    "dont_upcast_attention": False, "reserve_vram": None, "async_offload": False, "disable_api_nodes": False,
    "user_directory": None, "input_directory": None, "output_directory": None, "temp_directory": None,
    "base_directory": None, "extra_model_paths_config": None, "auto_launch": False, "disable_auto_launch": False,
}


class ComfyArgs:
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        current = _services.installed()
        plexus = getattr(current, "args", None)
        if plexus is not None and hasattr(plexus, name):
            value = getattr(plexus, name)
            if name == "preview_method" and isinstance(value, str):
                return LatentPreviewMethod(value) if value in {m.value for m in LatentPreviewMethod} else value
            return value
        return _COMFY_DEFAULTS.get(name)

    def __repr__(self) -> str:
        return "comfy.cli_args.args (Plexus's command line)"


args = ComfyArgs()
