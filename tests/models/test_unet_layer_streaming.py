"""The real SD1 UNet streamed layer by layer under a budget below its largest block: bit-identical."""
from __future__ import annotations

import torch

from model_management import MemorySettings, ModelHandle, ModelManager, VramMode
from model_management.streaming import offload_units
from model_management.weights import ModuleWeights
from models.checkpoint import load_checkpoint


def test_sd1_unet_streams_single_layers_bit_identically(tiny_checkpoint) -> None:
    unet = load_checkpoint(tiny_checkpoint("sd1")).unet
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10.0, 900.0]), torch.randn(2, 5, 32, generator=g))
    with torch.inference_mode():
        expected = unet(*inputs)
    units = offload_units(unet, ModuleWeights(unet), type(unet).OFFLOAD_BLOCKS)
    largest_block = max(u.nbytes for u in units if u.name.startswith(("input_blocks.", "middle_block", "output_blocks.")))
    containers = sum(u.nbytes for u in units if u.is_container)
    manager = ModelManager(MemorySettings(vram_mode=VramMode.NO, device="cpu",
                                          vram_budget_bytes=containers + largest_block // 2))
    record = manager.load_models_for([ModelHandle(unet)])[0]
    streamed = {u.name for u in record.streamer.units}
    assert any(".proj_in" in name for name in streamed)             # SD1's 1x1 projections are layers of their own
    with torch.inference_mode():
        got = unet(*inputs)
    assert torch.equal(got, expected)                                # no NaN placeholder was ever used
    assert manager.ledger.peak_bytes <= containers + largest_block // 2
    manager.free()
