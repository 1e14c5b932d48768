"""ComfyUI's ``comfy_extras.chainner_models`` (deprecated there in favour of spandrel): ``model_loading``."""
