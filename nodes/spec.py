"""Write nodes typed; emit ComfyUI's classic node protocol.

A built-in node is a small class with input descriptors in declaration order, a ``RETURNS`` tuple
and a ``run`` method; :func:`node` turns it into a class the executor cannot tell from a
hand-written classic node (``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``FUNCTION``,
``CATEGORY``, ``OUTPUT_NODE``, ``DESCRIPTION``, ``OUTPUT_TOOLTIPS``, ``OUTPUT_IS_LIST``,
``INPUT_IS_LIST``, ``DEPRECATED``, ``EXPERIMENTAL``, ``NOT_IDEMPOTENT``)::

    @node("LatentUpscaleBy", category="latent", display_name="Upscale Latent By")
    class LatentUpscaleBy:
        samples = Input("LATENT")
        upscale_method = Combo(UPSCALE_METHODS)
        scale_by = Float(1.5, min=0.01, max=8.0, step=0.01)
        RETURNS = (Output("LATENT"),)

        def run(self, samples: dict, upscale_method: str, scale_by: float) -> tuple[dict]:
            return (latent_ops.rescale(samples, scale_by, upscale_method),)

Widget options use ComfyUI's exact keys (``forceInput``, ``dynamicPrompts``, ``control_after_generate``
...); options left at ``None`` are not emitted. ``Combo`` accepts a callable that is called each time
``INPUT_TYPES`` is (model file lists stay fresh); a :class:`FileList` source also names its model folder,
which :func:`file_inputs` reads back (the one map of loader inputs to folders). Other protocol members (``IS_CHANGED``,
``VALIDATE_INPUTS``, ``check_lazy_status``) are written on the class as usual and left untouched.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Iterable, Sequence

# Python-style keyword -> ComfyUI's option key, where they differ.
_OPTION_KEYS = {"force_input": "forceInput", "dynamic_prompts": "dynamicPrompts",
                "default_input": "defaultInput", "raw_link": "rawLink"}


class Input:
    """A socket (``Input("MODEL")``) or, through the subclasses, a widget. ``options`` are emitted
    as the second element of the classic ``(TYPE, {options})`` tuple."""

    section = "required"

    def __init__(self, io_type: str, *, tooltip: str | None = None, lazy: bool | None = None,
                 force_input: bool | None = None, raw_link: bool | None = None, **options: Any):
        self.io_type = io_type
        self.options = {**options, "force_input": force_input or None, "lazy": lazy or None,
                        "raw_link": raw_link or None, "tooltip": tooltip}

    def spec(self) -> tuple:
        options = {_OPTION_KEYS.get(k, k): v for k, v in self.options.items() if v is not None}
        return (self.io_type, options) if options else (self.io_type,)


class Int(Input):
    def __init__(self, default: int | None = None, min: int | None = None, max: int | None = None,
                 step: int | None = None, *, control_after_generate: bool | str | None = None,
                 display: str | None = None, **common: Any):
        super().__init__("INT", default=default, min=min, max=max, step=step, display=display,
                         control_after_generate=control_after_generate, **common)


class Float(Input):
    def __init__(self, default: float | None = None, min: float | None = None, max: float | None = None,
                 step: float | None = None, round: float | bool | None = None, *,
                 display: str | None = None, **common: Any):
        super().__init__("FLOAT", default=default, min=min, max=max, step=step, round=round,
                         display=display, **common)


class String(Input):
    def __init__(self, default: str | None = None, multiline: bool | None = None,
                 dynamic_prompts: bool | None = None, *, placeholder: str | None = None, **common: Any):
        super().__init__("STRING", default=default, multiline=multiline, dynamic_prompts=dynamic_prompts,
                         placeholder=placeholder, **common)


class Boolean(Input):
    def __init__(self, default: bool | None = None, label_on: str | None = None,
                 label_off: str | None = None, **common: Any):
        super().__init__("BOOLEAN", default=default, label_on=label_on, label_off=label_off, **common)


class FileList:
    """A ``Combo`` choices source: the files of one model folder kind (``"checkpoints"``, ``"loras"``
    ...), listed by ``lister(kind)`` each time ``INPUT_TYPES`` is read."""

    def __init__(self, kind: str, lister: Callable[[str], list[str]]):
        self.kind = kind
        self._lister = lister

    def __call__(self) -> list[str]:
        return self._lister(self.kind)


class Combo(Input):
    """A list of choices, emitted in the classic spelling ``([choices], {options})``. ``options`` is
    a sequence or a zero-argument callable evaluated at ``INPUT_TYPES`` time."""

    def __init__(self, options: Sequence[str] | Callable[[], Iterable[str]], default: str | None = None, *,
                 image_upload: bool | None = None, control_after_generate: bool | str | None = None,
                 **common: Any):
        super().__init__("COMBO", default=default, image_upload=image_upload,
                         control_after_generate=control_after_generate, **common)
        self.choices = options

    def spec(self) -> tuple:
        choices = list(self.choices() if callable(self.choices) else self.choices)
        options = super().spec()[1:]
        return (choices, *options)


class Hidden:
    """A hidden input filled by the executor: ``"PROMPT"``, ``"EXTRA_PNGINFO"``, ``"UNIQUE_ID"``,
    ``"DYNPROMPT"``, ``"AUTH_TOKEN_COMFY_ORG"``, ``"API_KEY_COMFY_ORG"``."""

    section = "hidden"

    def __init__(self, kind: str):
        self.kind = kind

    def spec(self) -> str:
        return self.kind


def optional(descriptor: Input) -> Input:
    """Declare ``descriptor`` in the ``optional`` section (the node runs without it)."""
    descriptor.section = "optional"
    return descriptor


class Output:
    """One output: its type, and optionally a name, a tooltip and ``is_list`` (OUTPUT_IS_LIST)."""

    def __init__(self, io_type: str, name: str | None = None, tooltip: str | None = None,
                 is_list: bool = False):
        self.io_type, self.name, self.tooltip, self.is_list = io_type, name, tooltip, is_list


def node(name: str, *, category: str, display_name: str | None = None, output_node: bool = False,
         description: str | None = None, deprecated: bool = False, experimental: bool = False,
         input_is_list: bool = False, not_idempotent: bool = False,
         search_aliases: Sequence[str] | None = None, function: str | None = None) -> Callable[[type], type]:
    """Class decorator: collect the input descriptors (in declaration order), ``RETURNS`` and
    ``run``, and set the classic protocol attributes on the class. ``function`` is ComfyUI's
    ``FUNCTION`` name for the node (plugins call it, e.g. ``ImageBlur().blur``); ``run`` stays
    callable under both names."""

    def decorate(cls: type) -> type:
        if "INPUT_TYPES" in vars(cls) or "RETURN_TYPES" in vars(cls):
            raise TypeError(f"@node({name!r}): {cls.__name__} already defines the classic protocol")
        if not callable(getattr(cls, "run", None)):
            raise TypeError(f"@node({name!r}): {cls.__name__} needs a run(self, ...) method")
        inputs = [(key, value) for key, value in vars(cls).items() if isinstance(value, (Input, Hidden))]
        for key, _ in inputs:
            delattr(cls, key)
        outputs = [out if isinstance(out, Output) else Output(out) for out in getattr(cls, "RETURNS", ())]

        def INPUT_TYPES(klass: type) -> dict[str, dict[str, Any]]:
            sections: dict[str, dict[str, Any]] = {"required": {}}
            for key, descriptor in inputs:
                sections.setdefault(descriptor.section, {})[key] = descriptor.spec()
            return sections

        cls.INPUT_TYPES = classmethod(INPUT_TYPES)
        cls.RETURN_TYPES = tuple(out.io_type for out in outputs)
        cls.RETURN_NAMES = tuple(out.name or out.io_type for out in outputs)
        cls.FUNCTION = function or "run"
        if function and function != "run":
            setattr(cls, function, cls.run)
        cls.CATEGORY = category
        cls.OUTPUT_NODE = output_node
        if description is not None:
            cls.DESCRIPTION = description
        if any(out.tooltip for out in outputs):
            cls.OUTPUT_TOOLTIPS = tuple(out.tooltip for out in outputs)
        if any(out.is_list for out in outputs):
            cls.OUTPUT_IS_LIST = tuple(out.is_list for out in outputs)
        for attribute, value in (("INPUT_IS_LIST", input_is_list), ("DEPRECATED", deprecated),
                                 ("EXPERIMENTAL", experimental), ("NOT_IDEMPOTENT", not_idempotent)):
            if value:
                setattr(cls, attribute, True)
        if search_aliases:
            cls.SEARCH_ALIASES = list(search_aliases)
        cls.PLEXUS_NODE_ID = name
        cls.PLEXUS_FILE_INPUTS = {key: descriptor.choices.kind for key, descriptor in inputs
                                  if isinstance(descriptor, Combo) and isinstance(descriptor.choices, FileList)}
        cls.PLEXUS_DISPLAY_NAME = display_name
        return cls

    return decorate


def file_inputs(cls: type | None) -> dict[str, str]:
    """``{input name: model folder kind}`` of a node class's file-list inputs; {} for classes not
    written with :func:`node` (a plugin's literal lists name no folder)."""
    return dict(getattr(cls, "PLEXUS_FILE_INPUTS", None) or {})


def node_mappings(classes: Iterable[type]) -> tuple[dict[str, type], dict[str, str]]:
    """``(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)`` for decorated classes."""
    class_map: dict[str, type] = {}
    display_map: dict[str, str] = {}
    for cls in classes:
        node_id = getattr(cls, "PLEXUS_NODE_ID", None)
        if node_id is None:
            raise TypeError(f"{cls.__name__} is not decorated with @node")
        class_map[node_id] = cls
        if cls.PLEXUS_DISPLAY_NAME is not None:
            display_map[node_id] = cls.PLEXUS_DISPLAY_NAME
    return class_map, display_map


def module_mappings(module: types.ModuleType) -> tuple[dict[str, type], dict[str, str]]:
    """The mappings of a node module: its own ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``
    if it defines them, else every ``@node`` class defined in it, in definition order."""
    if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:
        return dict(module.NODE_CLASS_MAPPINGS), dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    own = [value for value in vars(module).values()
           if isinstance(value, type) and hasattr(value, "PLEXUS_NODE_ID")
           and value.__module__ == module.__name__]
    return node_mappings(own)
