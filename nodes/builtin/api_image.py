"""SaveImageWebsocket: ComfyUI's example node for API clients (custom_nodes/websocket_image_save.py, not one of
its core nodes): every image of the batch goes to the client over the websocket as a binary PNG frame, in
the preview frames' format (uint32 event 1, uint32 format 2 = PNG, the file's bytes; no metadata), and
nothing is written to disk. It reruns every time (ComfyUI's IS_CHANGED returns the time)."""
from __future__ import annotations

import torch

from execution.protocol import Preview, current_context
from imaging import files
from nodes.spec import Input, node


@node("SaveImageWebsocket", category="api/image", output_node=True, not_idempotent=True, function="save_images")
class SaveImageWebsocket:
    images = Input("IMAGE")
    RETURNS = ()

    def run(self, images: torch.Tensor) -> dict:
        context = current_context()
        for step, image in enumerate(images):
            if context is not None:
                context.report_progress(step, len(images), preview=Preview("PNG", files.png_bytes(image)))
        return {}
