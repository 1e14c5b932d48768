"""A small API-prompt builder and the deterministic input images the cases share."""
from __future__ import annotations

import io
from typing import Any


class Graph:
    """`g.add("KSampler", model=ckpt[0], ...)` returns the node; `node[i]` is its output i as a link."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> "NodeRef":
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return NodeRef(node_id)

    def prompt(self) -> dict[str, Any]:
        return {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in self.nodes.items()}


class NodeRef:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def __getitem__(self, index: int) -> list:
        return [self.node_id, index]


def test_image_png(size: int, *, with_alpha_mask: bool = False) -> bytes:
    """A smooth colour pattern (deterministic), optionally with an alpha hole: alpha 0 in a disc left of
    centre (LoadImage's MASK is 1 - alpha, so the disc is the area to inpaint)."""
    import numpy as np
    from PIL import Image
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    rgb = np.stack([0.5 + 0.4 * np.sin(6.0 * xx + 1.0), 0.5 + 0.4 * np.cos(5.0 * yy),
                    0.5 + 0.4 * np.sin(4.0 * (xx + yy))], axis=-1)
    pixels = (rgb * 255).round().clip(0, 255).astype(np.uint8)
    if with_alpha_mask:
        disc = (xx - 0.4) ** 2 + (yy - 0.5) ** 2 < 0.25 ** 2
        alpha = np.where(disc, 0, 255).astype(np.uint8)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA" if with_alpha_mask else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
