"""ComfyUI's ``comfy.comfy_types``: type names for annotations (see node_typing)."""
from typing import Any, Callable

from .node_typing import IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict

UnetWrapperFunction = Callable[[Callable, dict], Any]
UnetApplyFunction = Callable[..., Any]
UnetApplyConds = dict
UnetParams = dict

__all__ = ["UnetWrapperFunction", "UnetApplyConds", "UnetParams", "UnetApplyFunction", "IO", "InputTypeDict",
           "ComfyNodeABC", "CheckLazyMixin", "FileLocator"]
