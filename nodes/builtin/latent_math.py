"""Latent arithmetic, batching and latent-operation nodes (ComfyUI's comfy_extras/nodes_latent and
nodes_rebatch specs). Each wraps one function of `imaging.latent_math` (LatentApplyOperationCFG: of
`diffusion.guidance_patches`)."""
from __future__ import annotations

from diffusion.guidance_patches import with_latent_operation_cfg
from imaging import latent_math
from nodes.spec import Combo, Float, Input, Int, Output, node

MAX_RESOLUTION = 16384


@node("LatentAdd", category="latent/advanced", function="execute")
class LatentAdd:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict) -> tuple[dict]:
        return (latent_math.add(samples1, samples2),)


@node("LatentSubtract", category="latent/advanced", function="execute")
class LatentSubtract:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict) -> tuple[dict]:
        return (latent_math.subtract(samples1, samples2),)


@node("LatentMultiply", category="latent/advanced", function="execute")
class LatentMultiply:
    samples = Input("LATENT")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, multiplier: float) -> tuple[dict]:
        return (latent_math.multiply(samples, multiplier),)


@node("LatentInterpolate", category="latent/advanced", function="execute")
class LatentInterpolate:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict, ratio: float) -> tuple[dict]:
        return (latent_math.interpolate(samples1, samples2, ratio),)


@node("LatentConcat", category="latent/advanced", function="execute")
class LatentConcat:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    dim = Combo(latent_math.CONCAT_DIMS)
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict, dim: str) -> tuple[dict]:
        return (latent_math.concat(samples1, samples2, dim),)


@node("LatentCut", category="latent/advanced", function="execute")
class LatentCut:
    samples = Input("LATENT")
    dim = Combo(latent_math.CUT_DIMS)
    index = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    amount = Int(1, min=1, max=MAX_RESOLUTION, step=1)
    RETURNS = ("LATENT",)

    def run(self, samples: dict, dim: str, index: int, amount: int) -> tuple[dict]:
        return (latent_math.cut(samples, dim, index, amount),)


@node("LatentBatch", category="latent/batch", function="execute")
class LatentBatch:
    samples1 = Input("LATENT")
    samples2 = Input("LATENT")
    RETURNS = ("LATENT",)

    def run(self, samples1: dict, samples2: dict) -> tuple[dict]:
        return (latent_math.batch(samples1, samples2),)


@node("LatentBatchSeedBehavior", category="latent/advanced", function="execute")
class LatentBatchSeedBehavior:
    samples = Input("LATENT")
    seed_behavior = Combo(latent_math.SEED_BEHAVIORS, default="fixed")
    RETURNS = ("LATENT",)

    def run(self, samples: dict, seed_behavior: str) -> tuple[dict]:
        return (latent_math.set_seed_behavior(samples, seed_behavior),)


@node("RebatchLatents", category="latent/batch", display_name="Rebatch Latents", input_is_list=True,
      function="execute")
class RebatchLatents:
    latents = Input("LATENT")
    batch_size = Int(1, min=1, max=4096)
    RETURNS = (Output("LATENT", is_list=True),)

    def run(self, latents: list[dict], batch_size: list[int]) -> tuple[list[dict]]:
        return (latent_math.rebatch(latents, batch_size[0]),)


@node("LatentApplyOperation", category="latent/advanced/operations", experimental=True, function="execute")
class LatentApplyOperation:
    samples = Input("LATENT")
    operation = Input("LATENT_OPERATION")
    RETURNS = ("LATENT",)

    def run(self, samples: dict, operation: latent_math.LatentOperation) -> tuple[dict]:
        return (latent_math.apply_operation(samples, operation),)


@node("LatentApplyOperationCFG", category="latent/advanced/operations", experimental=True, function="execute")
class LatentApplyOperationCFG:
    model = Input("MODEL")
    operation = Input("LATENT_OPERATION")
    RETURNS = ("MODEL",)

    def run(self, model, operation: latent_math.LatentOperation) -> tuple:
        return (with_latent_operation_cfg(model, operation),)


@node("LatentOperationTonemapReinhard", category="latent/advanced/operations", experimental=True,
      function="execute")
class LatentOperationTonemapReinhard:
    multiplier = Float(1.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("LATENT_OPERATION",)

    def run(self, multiplier: float) -> tuple[latent_math.LatentOperation]:
        return (latent_math.tonemap_reinhard_operation(multiplier),)


@node("LatentOperationSharpen", category="latent/advanced/operations", experimental=True, function="execute")
class LatentOperationSharpen:
    sharpen_radius = Int(9, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    alpha = Float(0.1, min=0.0, max=5.0, step=0.01)
    RETURNS = ("LATENT_OPERATION",)

    def run(self, sharpen_radius: int, sigma: float, alpha: float) -> tuple[latent_math.LatentOperation]:
        return (latent_math.sharpen_operation(sharpen_radius, sigma, alpha),)
