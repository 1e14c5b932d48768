"""diffusion.upscale.upscale_image: IMAGE in and out, and the tile halving when memory runs out."""
from types import SimpleNamespace

import torch

from diffusion.upscale import upscale_image
from models.upscale import rrdbnet_from_state_dict
from tests.models.test_upscale import tiny_state


class _FakeManager:
    device = torch.device("cpu")

    def load_models_for(self, handles):
        pass


def test_upscale_image_halves_the_tile_when_memory_runs_out():
    net = rrdbnet_from_state_dict(tiny_state())
    tile_sizes = []

    def forward(tile):
        tile_sizes.append(max(tile.shape[-2:]))
        if max(tile.shape[-2:]) > 200:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return net(tile)

    module = type("Wrapped", (), {"config": net.config, "__call__": lambda self, t: forward(t)})()
    model = SimpleNamespace(module=module, manager=_FakeManager())
    image = torch.rand(1, 210, 20, 4)                                    # RGBA: alpha is dropped
    progress = []
    out = upscale_image(model, image, tile_px=512, overlap_px=32, on_tile=lambda d, t: progress.append((d, t)))
    assert out.shape == (1, 840, 80, 3) and 0.0 <= out.min() and out.max() <= 1.0
    # 512: one 210-px tile fails; 256: core 192 + 32 context, clipped to 210, fails; 128: core 64 + context fits
    assert tile_sizes[:2] == [210, 210] and max(tile_sizes[2:]) <= 128
    assert progress[-1][0] == progress[-1][1]
