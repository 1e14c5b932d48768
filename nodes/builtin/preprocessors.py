"""Image preprocessors for control models (ComfyUI's comfy_extras/nodes_canny spec); the work is in imaging."""
from __future__ import annotations

import torch

from imaging.canny import canny
from nodes.spec import Float, Input, node


@node("Canny", category="image/preprocessors", function="detect_edge",
      description="Canny edges (5x5 Gaussian, Sobel, non-maximum suppression, hysteresis) as a white-on-black "
                  "image; thresholds in the units of the blurred Sobel magnitude of a 0..1 image.")
class Canny:
    image = Input("IMAGE")
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01)
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01)
    RETURNS = ("IMAGE",)

    def run(self, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple:
        return (canny(image, low_threshold, high_threshold),)
