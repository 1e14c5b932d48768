"""Operations on a SIGMAS schedule (a 1-D tensor): splitting, flipping, replacing the first sigma and
inserting intermediate steps. Pure functions; the input is never modified."""
from __future__ import annotations

import math
import re

import torch
from torch import Tensor

SPACINGS = ("linear", "cosine", "sine")


def split_at_step(sigmas: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """(sigmas[:step + 1], sigmas[step:]): the two halves share the sigma at `step`."""
    return sigmas[:step + 1], sigmas[step:]


def split_by_denoise(sigmas: Tensor, denoise: float) -> tuple[Tensor, Tensor]:
    """The last round(steps * denoise) steps become the low part; the high part keeps the rest.
    As in ComfyUI, denoise 0 leaves the high part empty (sigmas[:-0]) and the low part the last sigma."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps], sigmas[-(low_steps + 1):]


def flip(sigmas: Tensor) -> Tensor:
    """Reversed (ascending, for unsampling); a leading 0 becomes 1e-4 so the first step is defined."""
    if len(sigmas) == 0:
        return sigmas
    flipped = sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = 0.0001
    return flipped


def with_first_sigma(sigmas: Tensor, sigma: float) -> Tensor:
    out = sigmas.clone()
    out[0] = sigma
    return out


def _spacing(name: str, u: Tensor) -> Tensor:
    if name == "linear":
        return u
    if name == "cosine":
        return torch.sin(u * math.pi / 2)
    if name == "sine":
        return 1 - torch.cos(u * math.pi / 2)
    raise ValueError(f"spacing {name!r} is not one of {', '.join(SPACINGS)}")


def extend_intermediate(sigmas: Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                        spacing: str = "linear") -> Tensor:
    """Split every step whose starting sigma lies in [end_at_sigma, start_at_sigma] (a negative start
    means no upper bound) into `steps` sub-steps, placed by `spacing` of u in (0, 1):
    sigma_i + f(u) (sigma_{i+1} - sigma_i)."""
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    offsets = _spacing(spacing, torch.linspace(0, 1, steps + 1)[1:-1])
    out: list[float] = []
    for i in range(len(sigmas) - 1):
        current, following = float(sigmas[i]), float(sigmas[i + 1])
        out.append(current)
        if end_at_sigma <= current <= start_at_sigma:
            out.extend((offsets * (following - current) + current).tolist())
    if len(sigmas) > 0:
        out.append(float(sigmas[-1]))
    return torch.tensor(out, dtype=torch.float32)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_sigmas(text: str) -> Tensor:
    """ManualSigmas: the numbers of `text` ("1, 0.5, 0.0"; commas, spaces or new lines between them) as a
    float32 schedule, in the order written. Anything else in the text raises a ValueError naming it."""
    tokens = [token for token in re.split(r"[,\s]+", text.strip()) if token]
    bad = [token for token in tokens if not _NUMBER.fullmatch(token)]
    if bad:
        raise ValueError(f"not a number: {', '.join(repr(token) for token in bad[:5])}; "
                         "write the sigmas as numbers separated by commas, e.g. '1.0, 0.5, 0.0'")
    return torch.tensor([float(token) for token in tokens], dtype=torch.float32)
