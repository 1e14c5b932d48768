"""More guidance patches (ComfyUI 0.3.64's specs): FreSca (frequency-scaled guidance), RenormCFG (Lumina 2's
CFG renormalisation and truncation) and the DiT Skip Layer Guidance pair. One call each into
diffusion.guidance_patches and diffusion.skip_layer_guidance."""
from __future__ import annotations

from diffusion import guidance_patches as gp
from diffusion import skip_layer_guidance as slg
from nodes.spec import Float, Input, Int, String, node

GUIDANCE = "advanced/guidance"


def _percent(default: float) -> Float:
    return Float(default, min=0.0, max=1.0, step=0.001)


@node("FreSca", category="_for_testing", display_name="FreSca", experimental=True, function="execute",
      description="Applies frequency-dependent scaling to the guidance")
class FreSca:
    model = Input("MODEL")
    scale_low = Float(1.0, min=0, max=10, step=0.01)
    scale_high = Float(1.25, min=0, max=10, step=0.01)
    freq_cutoff = Int(20, min=1, max=10000, step=1)
    RETURNS = ("MODEL",)

    def run(self, model, scale_low: float, scale_high: float, freq_cutoff: int) -> tuple:
        return (gp.with_fresca(model, scale_low, scale_high, freq_cutoff),)


@node("RenormCFG", category="advanced/model", function="execute")
class RenormCFG:
    model = Input("MODEL")
    cfg_trunc = Float(100, min=0.0, max=100.0, step=0.01)
    renorm_cfg = Float(1.0, min=0.0, max=100.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, cfg_trunc: float, renorm_cfg: float) -> tuple:
        return (gp.with_renorm_cfg(model, cfg_trunc, renorm_cfg),)


@node("SkipLayerGuidanceDiT", category=GUIDANCE, experimental=True, function="execute",
      description="Generic version of SkipLayerGuidance node that can be used on every DiT model.")
class SkipLayerGuidanceDiT:
    model = Input("MODEL")
    double_layers = String("7, 8, 9", multiline=False)
    single_layers = String("7, 8, 9", multiline=False)
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = _percent(0.01)
    end_percent = _percent(0.15)
    rescaling_scale = Float(0.0, min=0.0, max=10.0, step=0.01)
    RETURNS = ("MODEL",)

    def run(self, model, double_layers: str, single_layers: str, scale: float, start_percent: float,
            end_percent: float, rescaling_scale: float) -> tuple:
        return (slg.with_skip_layer_guidance_dit(model, double_layers, single_layers, scale, start_percent,
                                                 end_percent, rescaling_scale),)


@node("SkipLayerGuidanceDiTSimple", category=GUIDANCE, experimental=True, function="execute",
      description="Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass.")
class SkipLayerGuidanceDiTSimple:
    model = Input("MODEL")
    double_layers = String("7, 8, 9", multiline=False)
    single_layers = String("7, 8, 9", multiline=False)
    start_percent = _percent(0.0)
    end_percent = _percent(1.0)
    RETURNS = ("MODEL",)

    def run(self, model, double_layers: str, single_layers: str, start_percent: float, end_percent: float) -> tuple:
        return (slg.with_skip_layer_guidance_dit_simple(model, double_layers, single_layers, start_percent,
                                                        end_percent),)
