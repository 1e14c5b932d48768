"""When the sampler runs the UNet on pre-packed convolution weights (models/prepack.py): on the CPU, with the
model fully loaded, eager (a compiled forward reads the plain weights itself), unless the start-up settings
say no (`--disable-weight-prepack`)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from model_management.registry import Placement
from models.prepack import UnpackError, prepacked_convolutions

from .objects import DiffusionModel

log = logging.getLogger("plexus.diffusion")

# bf16 linears packed too (models.prepack.PackedLinear): measured by bench/roofline.py --pack-linears on/off
# off: 1.5-2.4% at 256² / 512² (within noise) and not bit-identical over the whole UNet (docs/performance.md,
# bench/linear_packing_identity.py)
IS_PACKING_LINEARS = False


def _record_to_prepack(model: DiffusionModel, unet: Any) -> Any:
    """The manager's record of `model` when its sampling run should prepack, else None."""
    manager: Any = model.manager
    if unet is not model.module or not getattr(manager, "is_prepacking_convolutions", False):
        return None
    record = manager.record_of(model)
    return record if record is not None and record.placement is Placement.FULL else None


def is_prepacking(model: DiffusionModel, unet: Any) -> bool:
    return _record_to_prepack(model, unet) is not None


@contextlib.contextmanager
def prepacked_for_sampling(model: DiffusionModel, unet: Any) -> Iterator[None]:
    """Around one sampling run, after the model is loaded and patched. If a packed weight cannot be put
    back, the model is dropped (it is loaded from its file again when next needed) and the error raised."""
    record = _record_to_prepack(model, unet)
    if record is None:
        yield
        return
    try:
        with prepacked_convolutions(model.module, known_aliases=record.weights.home.values(),
                                    is_packing_linears=IS_PACKING_LINEARS) as count:
            log.debug("sampling with %d convolutions on prepacked weights", count)
            yield
    except UnpackError as exc:
        model.manager.discard(model, why=f"dropped: {exc}")
        raise
