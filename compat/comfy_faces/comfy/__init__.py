"""ComfyUI's ``comfy`` package for plugins: each submodule is a thin face over a Plexus API
(``comfy.utils`` over imaging / models.files / the node context, ``comfy.model_management`` over the
ModelManager, ``comfy.samplers`` / ``comfy.sample`` over sampling and diffusion.ksampler, ...)."""
