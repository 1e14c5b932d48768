"""A1111 hypernetworks: small MLPs that rewrite the inputs of every attention's keys and values.

Format (AUTOMATIC1111 `modules/hypernetworks/hypernetwork.py`, read for facts only): a pickle holding
`{dim: [state_k, state_v], ..., "layer_structure": [1, 2, 1], "activation_func": "relu",
"is_layer_norm": bool, "use_dropout": bool, "last_layer_dropout": bool, "activate_output": bool, ...}`
where `dim` (an int: 320, 640, 768, 1280 for SD1) is the width of the tensor keys/values are computed
from, and each state is an `nn.Sequential` named `linear.<index>.weight/bias`: Linear, then (except
after the last Linear unless `activate_output`) the activation, then an optional LayerNorm, then an
optional Dropout. Only Linear and LayerNorm have weights, so the layer order is read from the indices;
dropout is the identity at inference.

Applied (A1111 `apply_hypernetworks`, ComfyUI `hypernetwork_patch`) to both attentions of every
transformer block: k_in = c + strength * mlp_k(c), v_in = c + strength * mlp_v(c), for the tensor c the
keys and values come from (the normed hidden states in self-attention, the text context in
cross-attention), when an MLP of c's width exists. Several hypernetworks apply in order.

This is an attention patch, not a weight patch: :func:`attach` records it in the MODEL clone's options
under :data:`KV_PATCHES_OPTION` and sets the options' `model_function_wrapper` (the MODEL's per-call
hook, ComfyUI's `set_model_unet_function_wrapper` shape: `wrapper(apply_model, {"input", "timestep",
"c"})`) to one that puts the patches into the UNet's `CrossAttention.kv_patch` hook for the duration of
each model call (:func:`kv_patches_installed`), chaining any wrapper that was there before.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from models.embeddings import load_trusted_pickle
from models.errors import ModelError, ModelFileError
from models.files import SAFETENSORS_SUFFIXES, load_state_dict

KV_PATCHES_OPTION = "attention_kv_patches"      # handle.options key: tuple of KVPatch, applied in order

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU,
    "swish": nn.Hardswish,                      # A1111 maps "swish" to Hardswish
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish,
    "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish, "softplus": nn.Softplus,
    "selu": nn.SELU, "celu": nn.CELU, "prelu": nn.PReLU, "relu6": nn.ReLU6, "hardtanh": nn.Hardtanh,
    "tanhshrink": nn.Tanhshrink, "logsigmoid": nn.LogSigmoid, "hardsigmoid": nn.Hardsigmoid,
}


class HypernetworkError(ModelError):
    type = "hypernetwork_error"


def build_mlp(state: Mapping[str, Tensor], activation: str, *, activate_output: bool,
              where: str) -> nn.Sequential:
    """One k or v MLP from its `linear.<i>.weight/bias` tensors (see the module docstring)."""
    layers: dict[int, dict[str, Tensor]] = {}
    for key, tensor in state.items():
        m = re.fullmatch(r"(?:linear\.)?(\d+)\.(weight|bias)", key)
        if m is None:
            raise HypernetworkError(f"{where}: unexpected tensor {key!r} (expected linear.<index>.weight/bias)")
        layers.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
    linear_count = sum(1 for p in layers.values() if p["weight"].ndim == 2)
    modules: list[nn.Module] = []
    seen_linear = 0
    for index in sorted(layers):
        params = layers[index]
        weight, bias = params["weight"].float(), params.get("bias")
        if weight.ndim == 2:
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            seen_linear += 1
            modules.append(layer)
            if activation != "linear" and (seen_linear < linear_count or activate_output):
                modules.append(ACTIVATIONS[activation]())
        else:
            layer = nn.LayerNorm(weight.shape[0])
            modules.append(layer)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias.float())
    if not linear_count:
        raise HypernetworkError(f"{where}: no linear layers")
    return nn.Sequential(*modules).eval().requires_grad_(False)


@dataclass(eq=False)
class Hypernetwork:
    """The k/v MLPs of one file, by input width."""

    mlps: dict[int, tuple[nn.Sequential, nn.Sequential]]
    name: str = ""

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Hypernetwork:
        for k, v in self.mlps.values():
            k.to(device, dtype)
            v.to(device, dtype)
        return self


@dataclass(eq=False)
class HypernetworkPatch:
    """A KVPatch: `(k_in, v_in) -> (k_in, v_in)` with one hypernetwork at one strength."""

    hypernetwork: Hypernetwork
    strength: float

    def __call__(self, k_in: Tensor, v_in: Tensor) -> tuple[Tensor, Tensor]:
        pair = self.hypernetwork.mlps.get(k_in.shape[-1])
        if pair is None or self.strength == 0:
            return k_in, v_in
        mlp_k, mlp_v = pair
        first = next(mlp_k.parameters())
        if first.device != k_in.device:
            self.hypernetwork.to(k_in.device)
        k = k_in + mlp_k(k_in.to(torch.float32)).to(k_in.dtype) * self.strength
        v = v_in + mlp_v(v_in.to(torch.float32)).to(v_in.dtype) * self.strength
        return k, v


def read_hypernetwork(path: str | os.PathLike) -> Hypernetwork:
    """Load an A1111 hypernetwork (`.pt` pickle read weights-only; a `.safetensors` export with
    `<dim>.<0|1>.linear.<i>.weight` keys and no settings is read too, with A1111's defaults)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        with load_state_dict(path) as source:
            data: dict = {}
            for key in source:
                dim, which, rest = key.split(".", 2)
                data.setdefault(int(dim), [{}, {}])[int(which)][rest] = source[key]
    else:
        data = load_trusted_pickle(path)
    if not isinstance(data, Mapping):
        raise HypernetworkError(f"{path} holds a {type(data).__name__}, not a hypernetwork")
    activation = str(data.get("activation_func") or "linear").lower()
    if activation not in ACTIVATIONS:
        raise HypernetworkError(f"{path.name}: activation {activation!r} is not supported",
                                f"supported: {', '.join(sorted(ACTIVATIONS))}")
    activate_output = bool(data.get("activate_output", False))
    mlps: dict[int, tuple[nn.Sequential, nn.Sequential]] = {}
    for key, value in data.items():
        try:
            dim = int(key)
        except (TypeError, ValueError):
            continue
        if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(s, Mapping) for s in value)):
            raise ModelFileError(f"{path.name}: entry {dim} is not a pair of k/v state dicts")
        mlps[dim] = tuple(build_mlp(s, activation, activate_output=activate_output, where=f"{path.name}[{dim}]")
                          for s in value)
    if not mlps:
        raise HypernetworkError(f"{path.name} has no layers (no integer-keyed entries)")
    return Hypernetwork(mlps, str(data.get("name") or path.stem))


def _compose(patches: Sequence) -> object:
    def kv_patch(k_in: Tensor, v_in: Tensor) -> tuple[Tensor, Tensor]:
        for patch in patches:
            k_in, v_in = patch(k_in, v_in)
        return k_in, v_in
    return kv_patch


@contextlib.contextmanager
def kv_patches_installed(unet: nn.Module, patches: Sequence) -> Iterator[None]:
    """Put `patches` (applied in order) into every attention's `kv_patch` hook inside `unet` for the
    duration of the block; the hooks are cleared afterwards even on error. A model is shared by the
    graphs that use it, so install around each model call (the worker runs one prompt at a time)."""
    if not patches:
        yield
        return
    hooked = [m for m in unet.modules() if hasattr(type(m), "kv_patch")]
    fn = _compose(tuple(patches))
    for module in hooked:
        module.kv_patch = fn
    try:
        yield
    finally:
        for module in hooked:
            module.__dict__.pop("kv_patch", None)


WRAPPER_OPTION = "model_function_wrapper"


def kv_patch_wrapper(unet: nn.Module, patches: tuple, inner=None):
    """A model-function wrapper that runs the model call (through `inner`, a wrapper set before, if any)
    with `patches` installed in `unet`'s attentions."""
    def wrapper(apply_model, args: dict):
        with kv_patches_installed(unet, patches):
            if inner is not None:
                return inner(apply_model, args)
            return apply_model(args["input"], args["timestep"], args["c"])
    wrapper.kv_patches = patches
    wrapper.inner = inner
    return wrapper


def attach(options: Mapping[str, object], unet: nn.Module, patch: object) -> dict[str, object]:
    """A copy of a MODEL's options with `patch` added after the hypernetworks already there."""
    out = dict(options)
    previous = out.get(WRAPPER_OPTION)
    is_ours = previous is not None and hasattr(previous, "kv_patches")
    patches = (tuple(previous.kv_patches) if is_ours else ()) + (patch,)
    out[KV_PATCHES_OPTION] = patches
    out[WRAPPER_OPTION] = kv_patch_wrapper(unet, patches, previous.inner if is_ours else previous)
    return out
