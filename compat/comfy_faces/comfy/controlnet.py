"""ComfyUI's ``comfy.controlnet`` for plugins: the ControlBase protocol that packs subclass (Advanced-ControlNet's
``ControlNetAdvanced(ControlNet, ...)``) and ``load_controlnet``, over Plexus's control models.

    net = comfy.controlnet.load_controlnet(path)          # a ControlNet over diffusion.controlnet.load_control_file
    c = net.copy().set_cond_hint(hint, strength, (start, end))
    c.set_previous_controlnet(options.get("control"))     # then conditioning[i][1]["control"] = c

A ControlBase is a diffusion.controlnet.SamplingControl, so Plexus's sampler runs it as it runs its own
applications: `models(base_model)` calls the plugin-visible `pre_run(model, percent_to_sigma)` and loads what
`get_models()` lists; each UNet call asks `get_control(x_noisy, sigma, cond, batched_number, transformer_options)`
for ComfyUI's residual dict ({"input", "middle", "output"} lists, popped from the end as ComfyUI's UNet does)
and hands it to the UNet as models.controlnet.ControlResiduals; `finish()` calls `cleanup()`. ``ControlNet``'s
``control_model`` is the network Plexus loaded, called with ComfyUI's keywords (x, hint, timesteps, context, y,
control_type) and answering ComfyUI's dict; ``control_model_wrapped`` is its model-manager handle.

Built: SD1.x / SD2.x / SDXL ControlNets (ldm, diffusers and bare layouts, diff, union, shuffle) through
``load_controlnet``. Not built (a clear error): T2I-Adapters, control-LoRAs and SD3 / SD3.5 ControlNets through
this module (the core nodes load those), ControlLora / T2IAdapter / ControlNetSD35 objects, and a
``control_model`` that Plexus did not load.
"""
from __future__ import annotations

import logging
from enum import Enum
from typing import Any

import torch

from diffusion import controlnet as _plexus
from models.controlnet import ControlResiduals
from model_management.handle import ModelHandle

log = logging.getLogger(__name__)

_NOT_BUILT = ("{what}: not built in Plexus; ComfyUI-protocol controls there are SD1.x / SD2.x / SDXL ControlNets "
              "from comfy.controlnet.load_controlnet (the core ControlNetLoader / ControlNetApplyAdvanced nodes "
              "load T2I-Adapters, control-LoRAs and SD3 ControlNets)")


class StrengthType(Enum):
    CONSTANT = 1
    LINEAR_UP = 2


def broadcast_image_to(tensor: torch.Tensor, target_batch_size: int, batched_number: int) -> torch.Tensor:
    """A hint batch for a model batch of `target_batch_size` made of `batched_number` CFG chunks: one hint stays
    one (it broadcasts); otherwise every chunk gets the first target/batched hints, cycled."""
    if tensor.shape[0] == 1:
        return tensor
    per_chunk = target_batch_size // batched_number
    tensor = tensor[torch.arange(per_chunk, device=tensor.device) % tensor.shape[0]]
    return tensor if per_chunk == target_batch_size else torch.cat([tensor] * batched_number)


class ComfySampling:
    """ComfyUI's model_sampling names over a Plexus model sampling (what a control's `model_sampling_current` is):
    `calculate_input(sigma, x)` = x * c_in(sigma); the rest is the Plexus object's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def calculate_input(self, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        scale = self.inner.input_scale(sigma.to(noise.device))
        return noise * scale.reshape(scale.shape[:1] + (1,) * (noise.ndim - 1)).to(noise.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def residual_dict(residuals: ControlResiduals | None, input_blocks: int) -> dict | None:
    """Plexus residuals as ComfyUI's dict: "output"[i] joins input block i's skip, "input" is read from its end
    (the last entry after input block 0), "middle" holds the middle block's."""
    if residuals is None:
        return None
    out = {"input": [residuals.after_input.get(i) for i in reversed(range(input_blocks))] if residuals.after_input
           else [], "middle": [residuals.middle] if residuals.middle is not None else [],
           "output": [residuals.skips.get(i) for i in range(input_blocks)] if residuals.skips else []}
    return out


def residuals_from_dict(control: dict | None, input_blocks: int | None) -> ControlResiduals | None:
    """ComfyUI's residual dict as Plexus residuals. ComfyUI's UNet pops each list from its end: "input" after
    every input block (block 0 gets the last entry), "middle" once, "output" before every output block (output
    block j reads input block n-1-j's skip and gets the entry L-1-j of a list of L)."""
    if control is None:
        return None
    skips_list = list(control.get("output") or [])
    shift = (input_blocks or len(skips_list)) - len(skips_list)
    after = list(control.get("input") or [])
    middle = list(control.get("middle") or [])
    return ControlResiduals(after_input={i: t for i, t in enumerate(reversed(after)) if t is not None},
                            skips={k + shift: t for k, t in enumerate(skips_list) if t is not None},
                            middle=middle[-1] if middle else None)


def _input_block_count(base_model: Any) -> int | None:
    blocks = getattr(getattr(base_model, "module", None), "input_blocks", None)
    return len(blocks) if blocks is not None else None


class ControlBase(_plexus.SamplingControl):
    """ComfyUI's ControlBase: a hint, its strength and percent range, the control below (`previous_controlnet`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.cond_hint_original = None
        self.cond_hint = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.latent_format = None
        self.vae = None
        self.global_average_pooling = False
        self.timestep_range = None
        self.compression_ratio = 8
        self.upscale_algorithm = "nearest-exact"
        self.extra_args: dict = {}
        self.previous_controlnet = None
        self.extra_conds: list = []
        self.strength_type = StrengthType.CONSTANT
        self.concat_mask = False
        self.extra_concat_orig: list = []
        self.extra_concat = None
        self.extra_hooks = None
        self.preprocess_image = lambda a: a
        self._plexus_base = None                   # the MODEL being sampled (set by models())
        self._sample_sigmas = None                 # the sigmas the sampler walks (set_sample_sigmas)

    # --- ComfyUI's protocol ---------------------------------------------------------------------------

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=()):
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        if self.latent_format is not None:
            if vae is None:
                log.warning("no VAE given to the ControlNet apply node, and this ControlNet takes a latent hint")
            self.vae = vae
        self.extra_concat_orig = list(extra_concat)
        if self.concat_mask and not self.extra_concat_orig:
            self.extra_concat_orig.append(torch.ones(1, 1, 1, 1))
        return self

    def pre_run(self, model, percent_to_timestep_function):
        """Before sampling: the percent range as sigmas (ComfyUI calls them timesteps), for this and those below."""
        self.timestep_range = (percent_to_timestep_function(self.timestep_percent_range[0]),
                               percent_to_timestep_function(self.timestep_percent_range[1]))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet):
        if isinstance(controlnet, _plexus.SamplingControl) and not isinstance(controlnet, ControlBase):
            controlnet = PlexusControlBelow(controlnet)      # a core Apply ControlNet's application below this one
        self.previous_controlnet = controlnet
        return self

    def cleanup(self):
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.extra_concat = None
        self.timestep_range = None

    def get_models(self) -> list:
        return self.previous_controlnet.get_models() if self.previous_controlnet is not None else []

    def get_extra_hooks(self) -> list:
        out = [self.extra_hooks] if self.extra_hooks is not None else []
        return out + (self.previous_controlnet.get_extra_hooks() if self.previous_controlnet is not None else [])

    def copy_to(self, c: ControlBase) -> None:
        c.cond_hint_original = self.cond_hint_original
        c.strength = self.strength
        c.timestep_percent_range = self.timestep_percent_range
        c.global_average_pooling = self.global_average_pooling
        c.compression_ratio = self.compression_ratio
        c.upscale_algorithm = self.upscale_algorithm
        c.latent_format = self.latent_format
        c.extra_args = dict(self.extra_args)
        c.vae = self.vae
        c.extra_conds = list(self.extra_conds)
        c.strength_type = self.strength_type
        c.concat_mask = self.concat_mask
        c.extra_concat_orig = list(self.extra_concat_orig)
        c.extra_hooks = self.extra_hooks.clone() if self.extra_hooks else None
        c.preprocess_image = self.preprocess_image

    def inference_memory_requirements(self, dtype) -> int:
        return self.previous_controlnet.inference_memory_requirements(dtype) if self.previous_controlnet else 0

    def control_merge(self, control: dict, control_prev: dict | None, output_dtype) -> dict:
        """This control's residuals (pooled for shuffle nets, times the strength; a tensor listed twice is scaled
        once) plus those of the control below, summed where both give one."""
        out: dict[str, list] = {"input": [], "middle": [], "output": []}
        for key, tensors in control.items():
            scaled: set = set()
            for i, x in enumerate(tensors):
                if x is not None:
                    if self.global_average_pooling:
                        x = x.mean(dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    if x not in scaled:
                        scaled.add(x)
                        factor = (self.strength if self.strength_type == StrengthType.CONSTANT
                                  else self.strength ** float(len(tensors) - i))
                        x *= factor
                    if output_dtype is not None and x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out[key].append(x)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                mine = out[key]
                for i, below in enumerate(control_prev[key]):
                    if i >= len(mine):
                        mine.append(below)
                    elif below is not None:
                        mine[i] = below if mine[i] is None else below + mine[i]
        return out

    def set_extra_arg(self, argument, value=None):
        self.extra_args[argument] = value

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        return (self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
                if self.previous_controlnet is not None else None)

    # --- what Plexus's sampler asks (diffusion.controlnet.SamplingControl) --------------------------

    def models(self, base_model=None) -> list:
        self._plexus_base = base_model
        self.pre_run(base_model, base_model.model_sampling.percent_to_sigma)
        handles = []
        for model in self.get_models():
            if not isinstance(model, ModelHandle):
                raise NotImplementedError(f"{type(self).__name__}.get_models() lists a {type(model).__name__}: "
                                          "Plexus loads only the models its own loaders made")
            handles.append(model)
        return handles

    def set_sample_sigmas(self, sigmas) -> None:
        self._sample_sigmas = sigmas

    def residuals(self, x, timestep, inputs, *, sigma, chunks, model_sampling):
        options = dict(inputs.get("transformer_options") or {})
        if self._sample_sigmas is not None:
            options.setdefault("sample_sigmas", self._sample_sigmas)
        sigmas = options.get("sigmas")
        t = (sigmas.reshape(-1) if sigmas is not None else torch.tensor([float(sigma)])).to(x.device)
        t = t.repeat(max(x.shape[0] // t.numel(), 1))[:x.shape[0]] if t.numel() != x.shape[0] else t
        scale = model_sampling.input_scale(t).reshape(-1, *(1,) * (x.ndim - 1)).to(x.dtype)
        control = self.get_control(x / scale, t, inputs, chunks, options)     # ComfyUI's x_noisy: unscaled
        return residuals_from_dict(control, _input_block_count(self._plexus_base))

    def finish(self) -> None:
        self._sample_sigmas = None
        self.cleanup()


class PlexusControlBelow(ControlBase):
    """A Plexus application (a core Apply ControlNet's) below a plugin's control, answering ComfyUI's calls."""

    def __init__(self, application: _plexus.SamplingControl):
        super().__init__()
        self.application = application
        self._sampling = None

    def pre_run(self, model, percent_to_timestep_function):
        self._plexus_base = model
        self._sampling = model.model_sampling

    def get_models(self) -> list:
        return self.application.models(self._plexus_base)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        x = ComfySampling(self._sampling).calculate_input(t, x_noisy)
        residuals = self.application.residuals(x, self._sampling.timestep(t), cond, sigma=float(t[0]),
                                               chunks=batched_number, model_sampling=self._sampling)
        return residual_dict(residuals, _input_block_count(self._plexus_base) or 0)

    def cleanup(self):
        self.application.finish()

    def copy(self):
        return PlexusControlBelow(self.application)


class PlexusControlModel:
    """A ControlNet network Plexus loaded, called as ComfyUI's cldm.ControlNet is:
    (x, hint, timesteps, context, y=None, control_type=[]) -> {"middle": [m], "output": [one per input block]}."""

    def __init__(self, handle: _plexus.ControlModel, control_types: tuple[int, ...] = ()):
        self.handle = handle
        self.control_types = tuple(control_types)

    @property
    def dtype(self) -> torch.dtype:
        return self.handle.module.dtype

    def __call__(self, x, hint, timesteps, context, y=None, control_type=None, **_: Any) -> dict:
        types = tuple(control_type) if control_type else self.control_types
        residuals = self.handle.module(x, hint, timesteps, context, y=y, control_types=types)
        return {"middle": [residuals.middle], "output": [residuals.skips[i] for i in sorted(residuals.skips)]}


class ControlNet(ControlBase):
    """ComfyUI's ControlNet: a ControlNet network's residuals for the current step, its hint resized to the
    latent's pixel size (nearest-exact, centre crop) and broadcast over the CFG chunks."""

    def __init__(self, control_model=None, global_average_pooling=False, compression_ratio=8, latent_format=None,
                 load_device=None, manual_cast_dtype=None, extra_conds=("y",), strength_type=StrengthType.CONSTANT,
                 concat_mask=False, preprocess_image=lambda a: a):
        super().__init__()
        if control_model is not None and not isinstance(control_model, PlexusControlModel):
            raise NotImplementedError(_NOT_BUILT.format(
                what=f"comfy.controlnet.{type(self).__name__} over a {type(control_model).__name__}"))
        self.control_model = control_model
        self.load_device = load_device
        if control_model is not None:
            self.control_model_wrapped = control_model.handle
        self.compression_ratio = compression_ratio
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current = None
        self.manual_cast_dtype = manual_cast_dtype
        self.latent_format = latent_format
        self.extra_conds += list(extra_conds)
        self.strength_type = strength_type
        self.concat_mask = concat_mask
        self.preprocess_image = preprocess_image

    def _hint_for(self, x_noisy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        from comfy import utils
        ratio = self.compression_ratio
        if self.vae is not None:
            ratio *= self.vae.spacial_compression_encode()
        elif self.latent_format is not None:
            raise ValueError("This ControlNet takes its hint as a latent: connect a VAE to the apply node")
        hint = utils.common_upscale(self.cond_hint_original, x_noisy.shape[-1] * ratio, x_noisy.shape[-2] * ratio,
                                    self.upscale_algorithm, "center")
        hint = self.preprocess_image(hint)
        if self.vae is not None:
            hint = self.vae.encode(hint.movedim(1, -1))
        if self.latent_format is not None:
            hint = self.latent_format.process_in(hint)
        if self.extra_concat_orig:
            extra = [utils.repeat_to_batch_size(utils.common_upscale(c.to(hint.device), hint.shape[-1], hint.shape[-2],
                                                                     self.upscale_algorithm, "center"), hint.shape[0])
                     for c in self.extra_concat_orig]
            hint = torch.cat([hint, *extra], dim=1)
        return hint.to(device=x_noisy.device, dtype=dtype)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        below = None
        if self.previous_controlnet is not None:
            below = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and not self.timestep_range[1] <= t[0] <= self.timestep_range[0]:
            return below
        dtype = self.manual_cast_dtype or self.control_model.dtype
        size = (x_noisy.shape[-2] * self.compression_ratio, x_noisy.shape[-1] * self.compression_ratio)
        if self.cond_hint is None or tuple(self.cond_hint.shape[-2:]) != size:
            self.cond_hint = self._hint_for(x_noisy, dtype)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        from comfy.model_base import convert_tensor
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        extra = dict(self.extra_args)
        for name in self.extra_conds:
            if cond.get(name) is not None:
                extra[name] = convert_tensor(cond[name], dtype, x_noisy.device)
        timestep = self.model_sampling_current.timestep(t)
        x = self.model_sampling_current.calculate_input(t, x_noisy)
        control = self.control_model(x=x.to(dtype), hint=self.cond_hint, timesteps=timestep.to(dtype),
                                     context=context.to(device=x_noisy.device, dtype=dtype), **extra)
        return self.control_merge(control, below, output_dtype=None)

    def copy(self):
        c = ControlNet(None, global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                       manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        return c

    def get_models(self) -> list:
        return super().get_models() + [self.control_model_wrapped]

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = ComfySampling(model.model_sampling)

    def cleanup(self):
        self.model_sampling_current = None
        super().cleanup()


class _NotBuilt(ControlNet):
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(_NOT_BUILT.format(what=f"comfy.controlnet.{type(self).__name__}"))


class ControlNetSD35(_NotBuilt):
    pass


class ControlLora(_NotBuilt):
    pass


class ControlLoraOps:
    pass


class T2IAdapter(ControlBase):
    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(_NOT_BUILT.format(what=f"comfy.controlnet.{type(self).__name__}"))


def _manager():
    from nodes import services
    return services.current().model_manager()


def load_controlnet(ckpt_path: str, model: Any = None, model_options: dict | None = None) -> ControlNet:
    """A ControlNet file as ComfyUI's ControlNet object (a diff ControlNet adds `model`'s UNet weights)."""
    net = _plexus.load_control_file(ckpt_path, _manager(), base_model=model)
    if net.kind != "controlnet":
        raise NotImplementedError(_NOT_BUILT.format(what=f"comfy.controlnet.load_controlnet of a {net.kind} file "
                                                         f"({ckpt_path})"))
    return ControlNet(PlexusControlModel(net.model, net.control_types),
                      global_average_pooling=net.is_global_average_pooling, load_device=net.model.manager.device)


def load_controlnet_state_dict(state_dict: dict, model: Any = None, model_options: dict | None = None) -> ControlNet:
    import os
    import tempfile

    from safetensors.torch import save_file
    with tempfile.TemporaryDirectory() as folder:        # Plexus loads files; a state dict goes through one
        path = os.path.join(folder, "controlnet.safetensors")
        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
        return load_controlnet(path, model, model_options)


def load_t2i_adapter(t2i_data: dict, model_options: dict | None = None):
    raise NotImplementedError(_NOT_BUILT.format(what="comfy.controlnet.load_t2i_adapter"))
