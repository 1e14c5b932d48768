"""ComfyUI's ``comfy_extras.nodes_upscale_model``: its node classes, answered from Plexus's built-in nodes."""
from nodes.comfy_names import builtin_class as _builtin_class


def __getattr__(name: str):
    try:
        return _builtin_class(name)
    except LookupError:
        raise AttributeError(f"comfy_extras.nodes_upscale_model.{name} is not a node Plexus has") from None
