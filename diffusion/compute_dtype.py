"""ModelComputeDtype: the dtype the diffusion model computes in during sampling, per MODEL clone.

`with_compute_dtype(model, "bf16")` returns a clone whose option `compute_dtype` (hook_sampling's
COMPUTE_DTYPE_OPTION) names the dtype; "default" removes it (the model computes in its weights' dtype, as
chosen at load by model_management's dtype policy). diffusion.ksampler's model function runs such a clone
eagerly inside models.compute_cast.computing_in (weights cast per use, activations in that dtype); the
sampled latent comes back in float32 as always.
"""
from __future__ import annotations

import torch

from .hook_sampling import COMPUTE_DTYPE_OPTION
from .objects import DiffusionModel

COMPUTE_DTYPES = {"default": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def with_compute_dtype(model: DiffusionModel, name: str) -> DiffusionModel:
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {list(COMPUTE_DTYPES)}")
    twin = model.clone()
    dtype = COMPUTE_DTYPES[name]
    if dtype is None:
        twin.options.pop(COMPUTE_DTYPE_OPTION, None)
    else:
        twin.options[COMPUTE_DTYPE_OPTION] = dtype
    return twin


def compute_dtype_of(model: DiffusionModel) -> torch.dtype | None:
    return model.options.get(COMPUTE_DTYPE_OPTION)
