"""ComfyUI's ``comfy.model_management`` for plugins, over Plexus's ModelManager (``nodes.services``)
and the running node's context. Loading goes through the manager (``load_models_gpu`` loads the
handles it is given under the same budget as Plexus's own nodes); interruption is Plexus's."""
from __future__ import annotations

import enum
from typing import Any, Iterable

import torch

from execution.errors import Interrupted
from execution.protocol import current_context
from model_management.dtypes import ModelPart
from nodes import services as _services


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


class InterruptProcessingException(Interrupted):
    """ComfyUI's interruption exception; raising it stops the prompt as Plexus's Interrupted does."""

    def __init__(self, message: str = "Processing interrupted"):
        super().__init__(message)


OOM_EXCEPTION = torch.cuda.OutOfMemoryError
XFORMERS_IS_AVAILABLE = False
XFORMERS_ENABLED_VAE = False
directml_enabled = False
DISABLE_SMART_MEMORY = False


def _manager():
    return _services.current().model_manager()


def _vram_mode_name() -> str:
    return str(getattr(_manager().vram_mode, "value", _manager().vram_mode))


def __getattr__(name: str) -> Any:
    if name == "vram_state":
        return {"cpu": VRAMState.DISABLED, "novram": VRAMState.NO_VRAM, "lowvram": VRAMState.LOW_VRAM,
                "highvram": VRAMState.HIGH_VRAM}.get(_vram_mode_name(), VRAMState.NORMAL_VRAM)
    if name == "cpu_state":
        return CPUState.CPU if get_torch_device().type == "cpu" else CPUState.GPU
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r}")


# --- devices and dtypes ---------------------------------------------------------------------------------

def get_torch_device() -> torch.device:
    return _manager().device


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return get_torch_device()


def vae_device() -> torch.device:
    return get_torch_device()


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


def mps_mode() -> bool:
    return get_torch_device().type == "mps"


def is_device_cpu(device: Any) -> bool:
    return getattr(device, "type", device) == "cpu"


def is_device_mps(device: Any) -> bool:
    return getattr(device, "type", device) == "mps"


def is_device_cuda(device: Any) -> bool:
    return getattr(device, "type", device) == "cuda"


def is_intel_xpu() -> bool:
    return False


def is_nvidia() -> bool:
    return get_torch_device().type == "cuda" and torch.version.cuda is not None


def _dtype(part: ModelPart) -> torch.dtype:
    return _manager().dtype_choices()[part].dtype


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None, weight_dtype: Any = None) -> torch.dtype:
    return _dtype(ModelPart.DIFFUSION)


def unet_manual_cast(weight_dtype: Any, inference_device: Any, supported_dtypes: Any = None) -> torch.dtype | None:
    return None


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    return _dtype(ModelPart.TEXT_ENCODER)


def vae_dtype(device: Any = None, allowed_dtypes: Any = None) -> torch.dtype:
    return _dtype(ModelPart.VAE)


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return _dtype(ModelPart.DIFFUSION) == torch.float16


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return _dtype(ModelPart.DIFFUSION) == torch.bfloat16


def xformers_enabled() -> bool:
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def pytorch_attention_flash_attention() -> bool:
    return False


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(device)


def supports_cast(device: Any, dtype: torch.dtype) -> bool:
    return True


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: torch.dtype | None, copy: bool = False) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype or tensor.dtype, copy=copy)


def cast_to(weight: torch.Tensor, dtype: torch.dtype | None = None, device: Any = None, non_blocking: bool = False,
            copy: bool = False, stream: Any = None) -> torch.Tensor:
    return weight.to(device=device or weight.device, dtype=dtype or weight.dtype, non_blocking=non_blocking, copy=copy)


# --- memory -----------------------------------------------------------------------------------------------

def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    free = _manager().device_available_bytes()
    if free is None:
        import psutil

        free = int(psutil.virtual_memory().available)
    return (free, free) if torch_free_too else free


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    import psutil

    total = int(torch.cuda.get_device_properties(dev or 0).total_memory) if get_torch_device().type == "cuda" \
        else int(psutil.virtual_memory().total)
    return (total, total) if torch_total_too else total


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def _handles(models: Iterable[Any]) -> list[Any]:
    return [m for m in models if m is not None and hasattr(m, "shared")]


def load_models_gpu(models: Iterable[Any], memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: Any = None, force_full_load: bool = False) -> None:
    """Load MODEL / CLIP / VAE handles on the compute device with their patches (ModelManager)."""
    handles = _handles(models)
    if handles:
        _manager().load_models_for(handles, int(memory_required or 0))


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    return []


def unload_all_models() -> None:
    _manager().free(unload_models=True)


def free_memory(memory_required: int, device: Any, keep_loaded: Iterable[Any] = ()) -> None:
    _manager().free_device_bytes(int(memory_required))


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cleanup_models(keep_clone_weights_loaded: bool = False) -> None:
    """Plexus frees unused models between prompts itself."""


# --- interruption -----------------------------------------------------------------------------------------

def processing_interrupted() -> bool:
    context = current_context()
    return bool(context is not None and context.is_interrupted)


def throw_exception_if_processing_interrupted() -> None:
    if processing_interrupted():
        raise InterruptProcessingException()


def interrupt_current_processing(value: bool = True) -> None:
    """Asks the engine to stop the running prompt (``NodeServices.interrupt``, set by main.py); a
    no-op where no engine is wired."""
    interrupt = getattr(_services.installed(), "interrupt", None)
    if value and interrupt is not None:
        interrupt()
