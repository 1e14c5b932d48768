"""ComfyUI's ``comfy_api.torch_helpers``: ``set_torch_compile_wrapper`` is named so packs that import it
load; Plexus has no torch.compile wrapper for MODEL objects yet, so calling it raises a clear error."""
from __future__ import annotations

from typing import Any


def set_torch_compile_wrapper(model: Any, backend: str = "inductor", mode: str | None = None, **kwargs: Any) -> None:
    raise NotImplementedError("Plexus does not wrap MODEL objects in torch.compile yet "
                              "(comfy_api.torch_helpers.set_torch_compile_wrapper)")


__all__ = ["set_torch_compile_wrapper"]
