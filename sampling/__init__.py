"""Sampling: schedules, samplers, guidance (CFG), seeded noise, and the KSampler driver.

Map: `model_sampling` (sigma tables, prediction types, flow), `schedules` (SCHEDULERS), `samplers` (SAMPLERS,
the single-step ones) with `samplers_multistep`, `samplers_sde`, `sa_solver`, `dpm_solver`, `unipc`; `guidance` (the model
function contract, Cond, CFGDenoiser); `noise` (ComfyUI-exact seeded noise); `sample` (the driver);
`latent_format` and `preview`. Imports torch (+ torchsde, numpy, scipy) only; importing does no work.
"""
