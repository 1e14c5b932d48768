"""The hooks family (ComfyUI 0.3.64's specs: scheduled LoRA weight patches carried by conditioning or a CLIP)
and ModelComputeDtype; one call each into diffusion.hooks / diffusion.compute_dtype."""
from __future__ import annotations

from diffusion import compute_dtype, hooks
from nodes import services
from nodes.spec import Boolean, Combo, Float, Input, Int, Output, node, optional

COND_AREAS = ["default", "mask bounds"]
EXPERIMENTAL = {"experimental": True}


def _strength(**kwargs) -> Float:
    return Float(1.0, min=-20.0, max=20.0, step=0.01, **kwargs)


# --- create ---------------------------------------------------------------------------------------------------

@node("CreateHookLora", category="advanced/hooks/create", display_name="Create Hook LoRA", function="create_hook",
      **EXPERIMENTAL)
class CreateHookLora:
    lora_name = Combo(services.file_list("loras"))
    strength_model = _strength()
    strength_clip = _strength()
    prev_hooks = optional(Input("HOOKS"))
    RETURNS = ("HOOKS",)

    def run(self, lora_name: str, strength_model: float, strength_clip: float, prev_hooks=None) -> tuple:
        path = services.folders().find("loras", lora_name)
        return (hooks.lora_hook_from_file(path, strength_model, strength_clip, prev_hooks),)


@node("CreateHookLoraModelOnly", category="advanced/hooks/create", display_name="Create Hook LoRA (MO)",
      function="create_hook_model_only", **EXPERIMENTAL)
class CreateHookLoraModelOnly:
    lora_name = Combo(services.file_list("loras"))
    strength_model = _strength()
    prev_hooks = optional(Input("HOOKS"))
    RETURNS = ("HOOKS",)

    def run(self, lora_name: str, strength_model: float, prev_hooks=None) -> tuple:
        path = services.folders().find("loras", lora_name)
        return (hooks.lora_hook_from_file(path, strength_model, 0.0, prev_hooks),)


def _model_as_lora(ckpt_name: str, strength_model: float, strength_clip: float, prev_hooks) -> tuple:
    return (hooks.model_as_lora_hook_from_file(services.folders().find("checkpoints", ckpt_name),
                                               services.current().model_manager(), strength_model, strength_clip,
                                               prev_hooks, embedding_dirs=services.folders().paths("embeddings")),)


@node("CreateHookModelAsLora", category="advanced/hooks/create", display_name="Create Hook Model as LoRA",
      function="create_hook", **EXPERIMENTAL)
class CreateHookModelAsLora:
    ckpt_name = Combo(services.file_list("checkpoints"))
    strength_model = _strength()
    strength_clip = _strength()
    prev_hooks = optional(Input("HOOKS"))
    RETURNS = ("HOOKS",)

    def run(self, ckpt_name: str, strength_model: float, strength_clip: float, prev_hooks=None) -> tuple:
        return _model_as_lora(ckpt_name, strength_model, strength_clip, prev_hooks)


@node("CreateHookModelAsLoraModelOnly", category="advanced/hooks/create",
      display_name="Create Hook Model as LoRA (MO)", function="create_hook_model_only", **EXPERIMENTAL)
class CreateHookModelAsLoraModelOnly:
    ckpt_name = Combo(services.file_list("checkpoints"))
    strength_model = _strength()
    prev_hooks = optional(Input("HOOKS"))
    RETURNS = ("HOOKS",)

    def run(self, ckpt_name: str, strength_model: float, prev_hooks=None) -> tuple:
        return _model_as_lora(ckpt_name, strength_model, 0.0, prev_hooks)


# --- schedule ---------------------------------------------------------------------------------------------------

@node("SetHookKeyframes", category="advanced/hooks/scheduling", display_name="Set Hook Keyframes",
      function="set_hook_keyframes", **EXPERIMENTAL)
class SetHookKeyframes:
    hooks = Input("HOOKS")
    hook_kf = optional(Input("HOOK_KEYFRAMES"))
    RETURNS = ("HOOKS",)

    def run(self, hooks, hook_kf=None) -> tuple:
        return (hooks if hook_kf is None else hooks.with_keyframes(hook_kf),)


@node("CreateHookKeyframe", category="advanced/hooks/scheduling", display_name="Create Hook Keyframe",
      function="create_hook_keyframe", **EXPERIMENTAL)
class CreateHookKeyframe:
    strength_mult = _strength()
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    prev_hook_kf = optional(Input("HOOK_KEYFRAMES"))
    RETURNS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def run(self, strength_mult: float, start_percent: float, prev_hook_kf=None) -> tuple:
        return ((prev_hook_kf or hooks.NO_KEYFRAMES).with_keyframe(hooks.HookKeyframe(strength_mult, start_percent)),)


@node("CreateHookKeyframesInterpolated", category="advanced/hooks/scheduling",
      display_name="Create Hook Keyframes Interp.", function="create_hook_keyframes", **EXPERIMENTAL)
class CreateHookKeyframesInterpolated:
    strength_start = Float(1.0, min=0.0, max=10.0, step=0.001)
    strength_end = Float(1.0, min=0.0, max=10.0, step=0.001)
    interpolation = Combo(list(hooks.INTERPOLATIONS))
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    keyframes_count = Int(5, min=2, max=100, step=1)
    print_keyframes = Boolean(False)
    prev_hook_kf = optional(Input("HOOK_KEYFRAMES"))
    RETURNS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def run(self, strength_start: float, strength_end: float, interpolation: str, start_percent: float,
            end_percent: float, keyframes_count: int, print_keyframes: bool = False, prev_hook_kf=None) -> tuple:
        strengths = hooks.interpolated(strength_start, strength_end, keyframes_count, interpolation)
        return (hooks.keyframes_over(strengths, start_percent, end_percent, prev_hook_kf, is_logged=print_keyframes),)


@node("CreateHookKeyframesFromFloats", category="advanced/hooks/scheduling",
      display_name="Create Hook Keyframes From Floats", function="create_hook_keyframes", **EXPERIMENTAL)
class CreateHookKeyframesFromFloats:
    floats_strength = Input("FLOATS", default=-1, min=-1, step=0.001, force_input=True)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    print_keyframes = Boolean(False)
    prev_hook_kf = optional(Input("HOOK_KEYFRAMES"))
    RETURNS = (Output("HOOK_KEYFRAMES", "HOOK_KF"),)

    def run(self, floats_strength, start_percent: float, end_percent: float, print_keyframes: bool = False,
            prev_hook_kf=None) -> tuple:
        return (hooks.keyframes_over(hooks.float_list(floats_strength), start_percent, end_percent, prev_hook_kf,
                                     is_logged=print_keyframes),)


# --- combine ----------------------------------------------------------------------------------------------------

def _combine_node(node_id: str, display_name: str, letters: str) -> type:
    namespace = {f"hooks_{letter}": optional(Input("HOOKS")) for letter in letters}
    namespace["RETURNS"] = ("HOOKS",)
    namespace["__doc__"] = f"{display_name}: the hooks of every connected input, each once, in order."
    namespace["run"] = lambda self, **groups: (hooks.combine_all(groups.get(f"hooks_{x}") for x in letters),)
    return node(node_id, category="advanced/hooks/combine", display_name=display_name, function="combine_hooks",
                **EXPERIMENTAL)(type(node_id, (), namespace))


CombineHooks2 = _combine_node("CombineHooks2", "Combine Hooks [2]", "AB")
CombineHooks4 = _combine_node("CombineHooks4", "Combine Hooks [4]", "ABCD")
CombineHooks8 = _combine_node("CombineHooks8", "Combine Hooks [8]", "ABCDEFGH")


# --- attach -----------------------------------------------------------------------------------------------------

def _strength_widget() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01)


@node("ConditioningSetProperties", category="advanced/hooks/cond single", display_name="Cond Set Props",
      function="set_properties", **EXPERIMENTAL)
class ConditioningSetProperties:
    cond_NEW = Input("CONDITIONING")
    strength = _strength_widget()
    set_cond_area = Combo(COND_AREAS)
    mask = optional(Input("MASK"))
    hooks = optional(Input("HOOKS"))
    timesteps = optional(Input("TIMESTEPS_RANGE"))
    RETURNS = ("CONDITIONING",)

    def run(self, cond_NEW, strength: float, set_cond_area: str, mask=None, hooks=None, timesteps=None) -> tuple:
        return tuple(_hooks.set_properties([cond_NEW], strength, set_cond_area, mask, hooks, timesteps))


@node("ConditioningSetPropertiesAndCombine", category="advanced/hooks/cond single",
      display_name="Cond Set Props Combine", function="set_properties", **EXPERIMENTAL)
class ConditioningSetPropertiesAndCombine:
    cond = Input("CONDITIONING")
    cond_NEW = Input("CONDITIONING")
    strength = _strength_widget()
    set_cond_area = Combo(COND_AREAS)
    mask = optional(Input("MASK"))
    hooks = optional(Input("HOOKS"))
    timesteps = optional(Input("TIMESTEPS_RANGE"))
    RETURNS = ("CONDITIONING",)

    def run(self, cond, cond_NEW, strength: float, set_cond_area: str, mask=None, hooks=None,
            timesteps=None) -> tuple:
        return tuple(_hooks.set_properties_and_combine([cond], [cond_NEW], strength, set_cond_area, mask, hooks,
                                                       timesteps))


@node("PairConditioningSetProperties", category="advanced/hooks/cond pair", display_name="Cond Pair Set Props",
      function="set_properties", **EXPERIMENTAL)
class PairConditioningSetProperties:
    positive_NEW = Input("CONDITIONING")
    negative_NEW = Input("CONDITIONING")
    strength = _strength_widget()
    set_cond_area = Combo(COND_AREAS)
    mask = optional(Input("MASK"))
    hooks = optional(Input("HOOKS"))
    timesteps = optional(Input("TIMESTEPS_RANGE"))
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive_NEW, negative_NEW, strength: float, set_cond_area: str, mask=None, hooks=None,
            timesteps=None) -> tuple:
        return tuple(_hooks.set_properties([positive_NEW, negative_NEW], strength, set_cond_area, mask, hooks,
                                           timesteps))


@node("PairConditioningSetPropertiesAndCombine", category="advanced/hooks/cond pair",
      display_name="Cond Pair Set Props Combine", function="set_properties", **EXPERIMENTAL)
class PairConditioningSetPropertiesAndCombine:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    positive_NEW = Input("CONDITIONING")
    negative_NEW = Input("CONDITIONING")
    strength = _strength_widget()
    set_cond_area = Combo(COND_AREAS)
    mask = optional(Input("MASK"))
    hooks = optional(Input("HOOKS"))
    timesteps = optional(Input("TIMESTEPS_RANGE"))
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive, negative, positive_NEW, negative_NEW, strength: float, set_cond_area: str, mask=None,
            hooks=None, timesteps=None) -> tuple:
        return tuple(_hooks.set_properties_and_combine([positive, negative], [positive_NEW, negative_NEW], strength,
                                                       set_cond_area, mask, hooks, timesteps))


@node("ConditioningSetDefaultCombine", category="advanced/hooks/cond single", display_name="Cond Set Default Combine",
      function="set_default_and_combine", **EXPERIMENTAL)
class ConditioningSetDefaultCombine:
    cond = Input("CONDITIONING")
    cond_DEFAULT = Input("CONDITIONING")
    hooks = optional(Input("HOOKS"))
    RETURNS = ("CONDITIONING",)

    def run(self, cond, cond_DEFAULT, hooks=None) -> tuple:
        return tuple(_hooks.set_default_and_combine([cond], [cond_DEFAULT], hooks))


@node("PairConditioningSetDefaultCombine", category="advanced/hooks/cond pair",
      display_name="Cond Pair Set Default Combine", function="set_default_and_combine", **EXPERIMENTAL)
class PairConditioningSetDefaultCombine:
    positive = Input("CONDITIONING")
    negative = Input("CONDITIONING")
    positive_DEFAULT = Input("CONDITIONING")
    negative_DEFAULT = Input("CONDITIONING")
    hooks = optional(Input("HOOKS"))
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive, negative, positive_DEFAULT, negative_DEFAULT, hooks=None) -> tuple:
        return tuple(_hooks.set_default_and_combine([positive, negative], [positive_DEFAULT, negative_DEFAULT], hooks))


@node("PairConditioningCombine", category="advanced/hooks/cond pair", display_name="Cond Pair Combine",
      function="combine", **EXPERIMENTAL)
class PairConditioningCombine:
    positive_A = Input("CONDITIONING")
    negative_A = Input("CONDITIONING")
    positive_B = Input("CONDITIONING")
    negative_B = Input("CONDITIONING")
    RETURNS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive_A, negative_A, positive_B, negative_B) -> tuple:
        return tuple(_hooks.set_properties_and_combine([positive_A, negative_A], [positive_B, negative_B]))


@node("SetClipHooks", category="advanced/hooks/clip", display_name="Set CLIP Hooks", function="apply_hooks",
      **EXPERIMENTAL)
class SetClipHooks:
    clip = Input("CLIP")
    apply_to_conds = Boolean(True)
    schedule_clip = Boolean(False)
    hooks = optional(Input("HOOKS"))
    RETURNS = ("CLIP",)

    def run(self, clip, apply_to_conds: bool, schedule_clip: bool, hooks=None) -> tuple:
        return (_hooks.set_clip_hooks(clip, hooks, apply_to_conds, schedule_clip),)


@node("ConditioningTimestepsRange", category="advanced/hooks", display_name="Timesteps Range",
      function="create_range", **EXPERIMENTAL)
class ConditioningTimestepsRange:
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    RETURNS = (Output("TIMESTEPS_RANGE"), Output("TIMESTEPS_RANGE", "BEFORE_RANGE"),
               Output("TIMESTEPS_RANGE", "AFTER_RANGE"))

    def run(self, start_percent: float, end_percent: float) -> tuple:
        return hooks.timesteps_ranges(start_percent, end_percent)


# --- compute dtype ----------------------------------------------------------------------------------------------

@node("ModelComputeDtype", category="advanced/debug/model", function="patch")
class ModelComputeDtype:
    model = Input("MODEL")
    dtype = Combo(list(compute_dtype.COMPUTE_DTYPES))
    RETURNS = ("MODEL",)

    def run(self, model, dtype: str) -> tuple:
        return (compute_dtype.with_compute_dtype(model, dtype),)


_hooks = hooks          # the module, where a node's `hooks` input shadows its name
