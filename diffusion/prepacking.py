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


def is_prepacking(model: DiffusionModel, unet: Any) -> bool:
    manager: Any = model.manager
    if manager.device.type != "cpu" or unet is not model.module:
        return False
    if not getattr(manager.settings, "prepack_weights", True):
        return False
    record = manager.record_of(model)
    return record is not None and record.placement is Placement.FULL


@contextlib.contextmanager
def prepacked_for_sampling(model: DiffusionModel, unet: Any) -> Iterator[None]:
    """Around one sampling run, after the model is loaded and patched. If a packed weight cannot be put
    back, the model is dropped (it is loaded from its file again when next needed) and the error raised."""
    if not is_prepacking(model, unet):
        yield
        return
    try:
        record = model.manager.record_of(model)
        with prepacked_convolutions(model.module, known_aliases=record.weights.home.values()) as count:
            log.debug("sampling with %d convolutions on prepacked weights", count)
            yield
    except UnpackError as exc:
        model.manager.discard(model, why=f"dropped: {exc}")
        raise
