"""Key conversion for LDM single-file checkpoints (SD1.x, SD2.x): pure functions over key names and shapes.

Plexus's UNet and VAE use the file's own module names, so conversion is a prefix strip plus, when asked for,
the swap to EMA weights. The functions return key *maps* ({model key: file key}) instead of tensors so the
loader can read, cast and assign one tensor at a time (peak memory: the model plus one tensor).

EMA naming: LDM's LitEma (ldm/modules/ema.py) registers one buffer per parameter of `model`, named by the
parameter path with every dot removed, under `model_ema.`:
`model.diffusion_model.input_blocks.0.0.weight` -> `model_ema.diffusion_modelinput_blocks00weight`.
The mangling is not reversible (names contain digits), so the map is built forward from the model keys.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from models.errors import KeyMismatchError, summarise_keys

Shapes = Mapping[str, tuple[int, ...]]

# Tensors an LDM file carries that no Plexus module consumes (DDPM schedule buffers, EMA counters).
LDM_IGNORED = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "model_ema.decay", "model_ema.num_updates", "logvar",
})


def ema_key(file_key: str) -> str:
    """The LitEma shadow of a `model.*` key: `model_ema.` + the path below `model.` without dots."""
    assert file_key.startswith("model."), file_key
    return "model_ema." + file_key[len("model."):].replace(".", "")


def has_ema_weights(keys: Iterable[str], unet_prefix: str = "model.diffusion_model.") -> bool:
    keys = set(keys)
    probe = unet_prefix + "input_blocks.0.0.weight"
    return probe in keys and ema_key(probe) in keys


def component_key_map(keys: Iterable[str], prefix: str) -> dict[str, str]:
    """{key without prefix: file key} for every file key under `prefix`."""
    return {k[len(prefix):]: k for k in keys if k.startswith(prefix)}


def unet_key_map(keys: Iterable[str], prefix: str = "model.diffusion_model.", *, use_ema: bool) -> dict[str, str]:
    """{UNet parameter name: file key}, pointing at the EMA shadows when `use_ema` is set.

    Raises KeyMismatchError listing the UNet keys that lack a shadow when the file has only part of an EMA copy.
    """
    keys = set(keys)
    mapping = component_key_map(keys, prefix)
    if not use_ema:
        return mapping
    shadows = {name: ema_key(file_key) for name, file_key in mapping.items()}
    missing = [s for s in shadows.values() if s not in keys]
    if missing:
        raise KeyMismatchError(
            f"The checkpoint's EMA copy is incomplete: {len(missing)} of {len(shadows)} UNet weights have "
            f"no `model_ema.*` shadow", summarise_keys(missing) + "; load it with use_ema=False")
    return shadows


def check_key_map(expected: Shapes, key_map: Mapping[str, str], file_shapes: Shapes, what: str) -> None:
    """Raise KeyMismatchError listing missing, unexpected and misshapen keys of one component."""
    missing = [k for k in expected if k not in key_map]
    unexpected = [key_map[k] for k in key_map if k not in expected]
    misshapen = [f"{key_map[k]} {tuple(file_shapes[key_map[k]])} (model {tuple(expected[k])})"
                 for k in key_map if k in expected and tuple(file_shapes[key_map[k]]) != tuple(expected[k])]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing ({len(missing)}): {summarise_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): {summarise_keys(unexpected)}")
        if misshapen:
            parts.append(f"wrong shape ({len(misshapen)}): {summarise_keys(misshapen, 8)}")
        raise KeyMismatchError(f"The {what} weights do not fit the detected architecture", "\n".join(parts),
                               {"missing": missing, "unexpected": unexpected, "misshapen": misshapen})


def unconsumed_keys(keys: Iterable[str], consumed_prefixes: Iterable[str]) -> list[str]:
    """File keys that no component took and that are not known LDM extras (reported, not fatal)."""
    prefixes = tuple(consumed_prefixes) + ("model_ema.",)
    return sorted(k for k in keys if not k.startswith(prefixes) and k not in LDM_IGNORED)
