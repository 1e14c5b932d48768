"""A node class's protocol attributes read once per prompt into a :class:`ClassSpec`.

ComfyUI spellings (``INPUT_TYPES``, ``RETURN_TYPES``, ``OUTPUT_IS_LIST`` ...) are read here; the
engine works on the spec. ``INPUT_TYPES()`` may be slow (plugins scan folders), so the validator
and the executor build one spec per class per prompt through :class:`SpecCache`.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from execution.protocol import ANY

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# ComfyUI's V3 DynamicCombo: a combo whose chosen option brings its own inputs. The spec is
# ("COMFY_DYNAMICCOMBO_V3", {"options": [{"key": k, "inputs": {"required": {...}, "optional": {...}}}]});
# a prompt names the option's inputs with dots ("resize_type": "scale dimensions",
# "resize_type.width": 512), nested combos twice ("format.save_mode.fps").
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


@dataclass(slots=True)
class InputSpec:
    name: str
    type: Any                   # "INT", "MODEL", "IMAGE,MASK", "*", or a list of combo options
    options: dict[str, Any]
    is_required: bool
    is_lazy: bool
    combo_options: list[Any] | None  # set for combos (either spelling)
    dynamic: dict[str, dict[str, InputSpec]] | None = None  # DynamicCombo: option key -> its dotted inputs

    @property
    def type_name(self) -> str:
        return "COMBO" if self.combo_options is not None else str(self.type)


@dataclass(slots=True)
class ClassSpec:
    class_type: str
    cls: type
    inputs: dict[str, InputSpec]          # required and optional, in declaration order
    hidden: dict[str, str]                # input name -> PROMPT / EXTRA_PNGINFO / UNIQUE_ID / DYNPROMPT
    is_hidden_from_context: bool          # HIDDEN_FROM_CONTEXT: hidden values read from the node context, not passed
    return_types: tuple[Any, ...]
    output_is_list: tuple[bool, ...]
    is_input_list: bool                   # INPUT_IS_LIST
    function: str
    is_output: bool
    is_async: bool
    is_volatile: bool                     # NOT_IDEMPOTENT: never cached
    is_changed: Any                       # the IS_CHANGED callable or None
    is_changed_args: frozenset[str]
    is_changed_has_kwargs: bool
    validate_fn: Any                      # the VALIDATE_INPUTS callable or None
    validate_args: frozenset[str]
    validate_has_kwargs: bool
    has_lazy: bool
    has_unique_id: bool
    has_dynamic: bool = False             # a DynamicCombo input: see inputs_for


def inputs_for(spec: ClassSpec, values: Mapping[str, Any]) -> dict[str, InputSpec]:
    """The inputs a node has for these prompt input values: the declared ones plus, for each DynamicCombo,
    the dotted inputs of the option its value picks (recursively). A linked or unknown choice adds none
    (the combo's own check reports an unknown one)."""
    if not spec.has_dynamic:
        return spec.inputs
    found: dict[str, InputSpec] = {}

    def add(inputs: dict[str, InputSpec]) -> None:
        for name, input_spec in inputs.items():
            found[name] = input_spec
            if input_spec.dynamic is not None:
                choice = values.get(name, input_spec.options.get("default"))
                if isinstance(choice, str) and choice in input_spec.dynamic:
                    add(input_spec.dynamic[choice])

    add(spec.inputs)
    return found


def _dynamic_options(name: str, options: dict[str, Any]) -> dict[str, dict[str, InputSpec]]:
    found: dict[str, dict[str, InputSpec]] = {}
    for option in options.get("options") or []:
        if not isinstance(option, dict) or "key" not in option:
            continue
        sections = option.get("inputs") or {}
        inputs: dict[str, InputSpec] = {}
        for section, is_required in (("required", True), ("optional", False)):
            for sub, raw in (sections.get(section) or {}).items():
                inputs[f"{name}.{sub}"] = _input_spec(f"{name}.{sub}", raw, is_required)
        found[str(option["key"])] = inputs
    return found


def argspec(fn: Any) -> tuple[frozenset[str], bool]:
    """The parameter names ``fn`` accepts (a bound ``cls`` excluded) and whether it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(p.name for p in parameters
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _input_spec(name: str, raw: Any, is_required: bool) -> InputSpec:
    if isinstance(raw, (list, tuple)) and raw and not isinstance(raw, str):
        input_type = raw[0]
        options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    else:  # a bare type string: tolerated, ComfyUI plugins sometimes write it
        input_type, options = raw, {}
    combo: list[Any] | None = None
    dynamic = None
    if isinstance(input_type, (list, tuple)):
        combo = list(input_type)
    elif input_type == "COMBO":
        combo = list(options.get("options", []) or [])
    elif input_type == DYNAMIC_COMBO:
        dynamic = _dynamic_options(name, options)
        combo = list(dynamic)
    return InputSpec(name, input_type, options, is_required, bool(options.get("lazy", False)), combo, dynamic)


def build_spec(class_type: str, cls: type) -> ClassSpec:
    """Read the protocol attributes of ``cls``; raises whatever ``INPUT_TYPES()`` raises."""
    declared = cls.INPUT_TYPES() or {}
    inputs: dict[str, InputSpec] = {}
    for section, is_required in (("required", True), ("optional", False)):
        for name, raw in (declared.get(section) or {}).items():
            inputs[name] = _input_spec(name, raw, is_required)
    hidden: dict[str, str] = {}
    for name, raw in (declared.get("hidden") or {}).items():
        kind = raw[0] if isinstance(raw, (list, tuple)) and raw else raw
        hidden[name] = kind if isinstance(kind, str) else str(kind)
    return_types = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    output_is_list = tuple(bool(x) for x in (getattr(cls, "OUTPUT_IS_LIST", None) or ()))
    output_is_list = output_is_list + (False,) * (len(return_types) - len(output_is_list))
    function = getattr(cls, "FUNCTION", None) or ""
    func = getattr(cls, function, None) if function else None
    validate_fn = getattr(cls, "VALIDATE_INPUTS", None)
    is_changed = getattr(cls, "IS_CHANGED", None)
    changed_args, changed_kwargs = argspec(is_changed) if is_changed is not None else (frozenset(), False)
    validate_args, validate_kwargs = argspec(validate_fn) if validate_fn is not None else (frozenset(), False)
    return ClassSpec(
        class_type=class_type, cls=cls, inputs=inputs, hidden=hidden,
        is_hidden_from_context=getattr(cls, "HIDDEN_FROM_CONTEXT", False) is True, return_types=return_types,
        output_is_list=output_is_list, is_input_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        function=function, is_output=getattr(cls, "OUTPUT_NODE", False) is True,
        is_async=func is not None and inspect.iscoroutinefunction(func),
        is_volatile=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        is_changed=is_changed, is_changed_args=changed_args, is_changed_has_kwargs=changed_kwargs,
        validate_fn=validate_fn,
        validate_args=validate_args, validate_has_kwargs=validate_kwargs,
        has_lazy=any(spec.is_lazy for spec in inputs.values()),
        has_unique_id="UNIQUE_ID" in hidden.values(),
        has_dynamic=any(spec.dynamic is not None for spec in inputs.values()),
    )


class SpecCache:
    """One :class:`ClassSpec` per class type for the length of one prompt."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._specs: dict[str, ClassSpec] = {}

    def get(self, class_type: str) -> ClassSpec | None:
        """The spec, or None for an unknown class; raises what ``INPUT_TYPES()`` raises."""
        spec = self._specs.get(class_type)
        if spec is None:
            cls = self.registry.get(class_type)
            if cls is None:
                return None
            spec = self._specs[class_type] = build_spec(class_type, cls)
        return spec


# -- constants -------------------------------------------------------------------------------------

class CoercionError(ValueError):
    """A constant input cannot become a value of its declared type."""


_TRUE_WORDS = {"true": True, "1": True, "yes": True, "on": True,
               "false": False, "0": False, "no": False, "off": False}


def coerce_constant(spec: InputSpec, value: Any) -> Any:
    """The value a widget input takes, converted like ComfyUI does (``int("3") == 3``).

    Raises :class:`CoercionError` for a value of the wrong type, NaN or infinity.
    """
    if isinstance(value, dict) and "__value__" in value:  # the editor's wrapper for list constants
        value = value["__value__"]
    kind = spec.type
    if kind == "INT":
        if value is None or isinstance(value, (dict, list)):
            raise CoercionError(f"{value!r} is not an integer")
        if isinstance(value, float) and not math.isfinite(value):
            raise CoercionError(f"{value!r} is not a finite number")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CoercionError(f"{value!r} is not an integer") from exc
    if kind == "FLOAT":
        if value is None or isinstance(value, (dict, list)):
            raise CoercionError(f"{value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CoercionError(f"{value!r} is not a number") from exc
        if not math.isfinite(number):
            raise CoercionError(f"{value!r} is not a finite number")
        return number
    if kind == "STRING":
        if value is None or isinstance(value, (dict, list)):
            raise CoercionError(f"{value!r} is not a string")
        return value if isinstance(value, str) else str(value)
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS:
            return _TRUE_WORDS[value.strip().lower()]
        raise CoercionError(f"{value!r} is not true or false")
    return value


def check_range(spec: InputSpec, value: Any) -> tuple[str, str] | None:
    """``(issue type, reason)`` when a number lies outside the input's min/max, else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high = spec.options.get("min"), spec.options.get("max")
    if isinstance(low, (int, float)) and value < low:
        return "value_smaller_than_min", f"Value {value} smaller than min of {low}"
    if isinstance(high, (int, float)) and value > high:
        return "value_bigger_than_max", f"Value {value} bigger than max of {high}"
    return None


def takes_literal(spec: InputSpec, link_only_types: frozenset[str]) -> bool:
    """Whether a constant may stand in this input: widgets, ``*``, and types no node outputs
    (a plugin's own front-end widget), unless the input says ``forceInput``."""
    if spec.combo_options is not None or spec.type in WIDGET_TYPES:
        return True
    if spec.options.get("forceInput"):
        return False
    if spec.type == ANY or not isinstance(spec.type, str):
        return True
    return spec.type not in link_only_types
