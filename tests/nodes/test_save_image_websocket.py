"""SaveImageWebsocket: each image of the batch reaches the client as a preview event holding a PNG of exactly
its 8-bit pixels (no metadata), which the websocket sends as ComfyUI's binary preview frame; nothing is
written to disk and the node reruns every time."""
from __future__ import annotations

import io
import struct

import numpy as np
import torch
from PIL import Image

from tests.nodes.engine_harness import Harness
from web.websocket import encode_preview


class _Given:
    images = None
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (_Given.images,)


def test_each_image_is_sent_as_a_png_preview_frame(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.registry.register("TestImages", _Given)
        _Given.images = torch.rand(3, 10, 14, 3, generator=torch.Generator().manual_seed(2))
        prompt = {"1": {"class_type": "TestImages", "inputs": {}},
                  "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
        for run in range(2):                                               # not cached: sent again
            before = len(h.seen)
            result = h.run(prompt)
            assert result.status == "success", result.error
            previews = [e.data["preview"] for e in h.seen[before:] if e.type == "preview"]
            assert len(previews) == 3, run
        for preview, image in zip(previews, _Given.images):
            assert preview.image_format == "PNG"
            with Image.open(io.BytesIO(preview.data)) as decoded:
                assert decoded.format == "PNG" and decoded.size == (14, 10) and "prompt" not in decoded.info
                pixels = np.asarray(decoded)
            expected = np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(pixels, expected)
            frame = encode_preview(preview, {}, with_metadata=False)
            assert struct.unpack(">II", frame[:8]) == (1, 2) and frame[8:] == preview.data   # PREVIEW_IMAGE, PNG
        written = [p for p in (h.folders.output, h.folders.temp) if p.exists() for p in p.rglob("*.png")]
        assert written == []
    finally:
        h.close()
