"""Schedulers against k-diffusion (karras, exponential) or their formulas written out here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from sampling.model_sampling import DiscreteSampling, FlowSampling
from sampling.schedules import SCHEDULERS, calculate_sigmas

from .kdiff_ref import load_k_sampling

COMFY_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]
MS = DiscreteSampling()
SMIN, SMAX = float(MS.sigma_min), float(MS.sigma_max)


def test_names_are_comfyui_names_in_order() -> None:
    assert list(SCHEDULERS) == COMFY_SCHEDULERS


@pytest.mark.parametrize("name", COMFY_SCHEDULERS)
@pytest.mark.parametrize("ms", [MS, FlowSampling(shift=3.0)], ids=["discrete", "flow"])
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_every_schedule_descends_to_zero(name, ms, steps) -> None:
    sigmas = calculate_sigmas(ms, name, steps)
    assert sigmas.ndim == 1 and sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[:-1] >= sigmas[1:]).all())
    assert float(sigmas[0]) <= float(ms.sigma_max) * (1 + 1e-5)
    if name not in ("beta", "ddim_uniform"):        # these drop duplicate / out-of-range steps by design
        assert len(sigmas) == steps + 1


def test_karras_and_exponential_match_k_diffusion() -> None:
    K = load_k_sampling()
    torch.testing.assert_close(SCHEDULERS["karras"](MS, 12), K.get_sigmas_karras(12, SMIN, SMAX), rtol=0, atol=0)
    torch.testing.assert_close(SCHEDULERS["exponential"](MS, 12), K.get_sigmas_exponential(12, SMIN, SMAX),
                               rtol=0, atol=0)


def _sigma_at(t: float) -> float:
    """Log-linear interpolation in the sigma table (independent of the implementation)."""
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    ls = np.log(MS.sigmas.double().numpy())
    return math.exp((1 - w) * ls[lo] + w * ls[hi])


def test_normal_and_sgm_uniform_space_timesteps_evenly() -> None:
    steps = 9
    expected = [_sigma_at(t) for t in np.linspace(999, 0, steps)] + [0.0]
    torch.testing.assert_close(SCHEDULERS["normal"](MS, steps).double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    expected = [_sigma_at(t) for t in np.linspace(999, 0, steps + 1)[:-1]] + [0.0]
    torch.testing.assert_close(SCHEDULERS["sgm_uniform"](MS, steps).double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_simple_and_ddim_uniform_pick_table_entries() -> None:
    table = MS.sigmas.tolist()
    steps = 8
    expected = [table[999 - int(i * 1000 / steps)] for i in range(steps)] + [0.0]
    assert SCHEDULERS["simple"](MS, steps).tolist() == pytest.approx(expected)
    c = 1000 // steps
    expected = [table[i] for i in range(1, 1000, c)][::-1] + [0.0]
    assert SCHEDULERS["ddim_uniform"](MS, steps).tolist() == pytest.approx(expected)


def test_beta_schedule_uses_beta_quantiles() -> None:
    steps = 10
    q = scipy.stats.beta.ppf(1 - np.arange(steps) / steps, 0.6, 0.6)
    idx = []
    for t in np.rint(q * 999).astype(int):
        if not idx or idx[-1] != t:
            idx.append(int(t))
    assert SCHEDULERS["beta"](MS, steps).tolist() == pytest.approx([MS.sigmas.tolist()[i] for i in idx] + [0.0])


def test_kl_optimal_is_arctan_linear() -> None:
    steps = 6
    i = np.arange(steps) / (steps - 1)
    expected = list(np.tan((1 - i) * math.atan(SMAX) + i * math.atan(SMIN))) + [0.0]
    torch.testing.assert_close(SCHEDULERS["kl_optimal"](MS, steps).double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_linear_quadratic_shape() -> None:
    """Mochi: first half linear from 0 to threshold 0.025 in 1 - sigma/sigma_max, then quadratic to 1."""
    steps = 8
    s = (SCHEDULERS["linear_quadratic"](MS, steps) / SMAX).double()
    t = 1 - s
    assert t[:4].tolist() == pytest.approx([0, 0.025 / 4, 0.05 / 4, 0.075 / 4], abs=1e-6)
    second = t[4:].numpy()
    # a quadratic through the remaining points: third differences vanish
    assert np.allclose(np.diff(second, 3), 0, atol=1e-6)
    assert float(t[-1]) == 1.0


def test_unknown_scheduler_suggests_a_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'karras'"):
        calculate_sigmas(MS, "karas", 10)
