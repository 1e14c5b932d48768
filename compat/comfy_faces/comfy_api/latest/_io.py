"""ComfyUI's V3 node schema (``comfy_api.latest.io``), names and ``/object_info`` shapes as in ComfyUI 0.3.64.

A V3 node is a class with two classmethods::

    class Invert(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Invert", inputs=[io.Image.Input("image")], outputs=[io.Image.Output()])

        @classmethod
        def execute(cls, image):
            return io.NodeOutput(1.0 - image)

How it reaches Plexus's engine: :class:`ComfyNode` answers the classic protocol from its schema
(``INPUT_TYPES()``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``OUTPUT_IS_LIST``, ``OUTPUT_NODE``,
``INPUT_IS_LIST``, ``NOT_IDEMPOTENT``, ``CATEGORY``, ``DESCRIPTION``, ``FUNCTION``), ``validate_inputs`` /
``fingerprint_inputs`` become ``VALIDATE_INPUTS`` / ``IS_CHANGED`` when a subclass defines them, and
``GET_NODE_INFO_V1()`` is the ``/object_info`` entry (the registry uses it as ComfyUI's server does).

Differences from ComfyUI (on purpose):

- ``FUNCTION`` is ``EXECUTE_NORMALIZED`` (``EXECUTE_NORMALIZED_ASYNC`` for ``async def execute``) as in
  ComfyUI, but those methods return the classic result dict (``{"result", "ui", "expand"}``) the engine
  takes; :meth:`ComfyNode.execute` itself still returns what the node returns (``NodeOutput``);
- hidden inputs come from the running node's context (``HIDDEN_FROM_CONTEXT``), never as keyword
  arguments, so an input named ``prompt`` never clashes with the hidden ``PROMPT``; ``execute`` runs on
  a per-call clone of the class whose ``hidden`` holds them, as ComfyUI's does (the clone is not locked
  against attribute writes);
- the base class has no ``check_lazy_status`` placeholder (ComfyUI's is never called: a node without its
  own leaves its lazy inputs unevaluated, here too);
- the schema is built once per class (ComfyUI re-runs ``define_schema`` on each ``INPUT_TYPES`` call);
  :meth:`ComfyNode.INPUT_TYPES` re-runs it, so combo options that list files stay fresh.
"""
from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Callable, Literal

from comfy_api.internal import (_ComfyNodeInternal, _NodeOutputInternal, classproperty, copy_class,
                                first_real_override, is_class, prune_dict, shallow_clone_class)
from execution.protocol import ExecutionBlocker, current_context, node_result, read_result


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class RemoteOptions:
    """A combo whose options the editor fetches from ``route``."""

    def __init__(self, route: str, refresh_button: bool, control_after_refresh: Literal["first", "last"] = "first",
                 timeout: int | None = None, max_retries: int | None = None, refresh: int | None = None):
        self.route = route
        self.refresh_button = refresh_button
        self.control_after_refresh = control_after_refresh
        self.timeout = timeout
        self.max_retries = max_retries
        self.refresh = refresh

    def as_dict(self) -> dict:
        return prune_dict({"route": self.route, "refresh_button": self.refresh_button,
                           "control_after_refresh": self.control_after_refresh, "timeout": self.timeout,
                           "max_retries": self.max_retries, "refresh": self.refresh})


class _StringIOType(str):
    """A socket type string whose ``!=`` is ComfyUI's: false against ``"*"`` and between a union
    (``"IMAGE,MASK"``) and any of its subsets or supersets (``==`` stays the plain string test)."""

    def __ne__(self, other: object) -> bool:
        if str.__eq__(self, "*") or other == "*":
            return False
        if not isinstance(other, str):
            return True
        mine, theirs = frozenset(self.split(",")), frozenset(other.split(","))
        return not (mine <= theirs or theirs <= mine)

    __hash__ = str.__hash__


class _ComfyType(ABC):
    Type = Any
    io_type: str = None


# --- inputs and outputs ------------------------------------------------------------------------------

class _IO_V3:  # noqa: N801 - ComfyUI's name
    """Base of inputs and outputs; ``Parent`` is the ComfyType whose ``io_type`` they carry."""

    Parent: Any = None

    @property
    def io_type(self) -> Any:
        return self.Parent.io_type

    @property
    def Type(self) -> Any:  # noqa: N802 - ComfyUI's name
        return self.Parent.Type


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict | None = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}

    def as_dict(self) -> dict:
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy}) | prune_dict(self.extra_dict)

    def get_io_type(self) -> Any:
        return _StringIOType(self.io_type)


class WidgetInput(Input):
    """An input the editor shows as a widget (unless ``force_input``)."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None, extra_dict: dict | None = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> Any:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict:
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self) -> Any:
        return self.io_type


class ComfyTypeI(_ComfyType):
    """A type with an input only."""

    class Input(Input):
        ...


class ComfyTypeIO(ComfyTypeI):
    """A type with an input and an output."""

    class Output(Output):
        ...


def comfytype(io_type: str, **kwargs: Any) -> Callable[[type], type]:
    """Class decorator: ``cls`` becomes the ComfyType of ``io_type`` with its own ``Input`` / ``Output``
    classes (copies, so binding them to ``cls`` leaves the classes they came from alone)."""
    def decorate(cls: type) -> type:
        if issubclass(cls, _ComfyType):
            new_cls = cls
            for name in ("Input", "Output"):
                if getattr(new_cls, name, None) is not None:
                    setattr(new_cls, name, copy_class(getattr(new_cls, name)))
        else:
            attributes = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            new_cls = type(cls.__name__, (cls, ComfyTypeIO), attributes)
            new_cls.__module__, new_cls.__doc__ = cls.__module__, cls.__doc__
            for name in ("Input", "Output"):
                if getattr(new_cls, name, None) is not None and name not in cls.__dict__:
                    setattr(new_cls, name, copy_class(getattr(new_cls, name)))
        new_cls.io_type = _StringIOType(io_type)
        for name in ("Input", "Output"):
            member = getattr(new_cls, name, None)
            if member is not None:
                member.Parent = new_cls
        return new_cls
    return decorate


def Custom(io_type: str) -> type:  # noqa: N802 - ComfyUI's name
    """The ComfyType of a pack's own socket type."""
    return comfytype(io_type=io_type)(type(f"Custom_{io_type}", (ComfyTypeIO,), {"Type": Any}))


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on = label_on
            self.label_off = label_off

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,
                     round: float | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict:
            display = self.display_mode.value if isinstance(self.display_mode, Enum) else self.display_mode
            return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                   "round": self.round, "display": display})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None,
                     dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        """A dropdown; ``options`` may be a list or an Enum class (its values)."""

        def __init__(self, id: str, options: list | type[Enum] | None = None, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     default: Any = None, control_after_generate: bool | None = None,
                     upload: UploadType | None = None, image_folder: FolderType | None = None,
                     remote: RemoteOptions | None = None, socketless: bool | None = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None,
                "remote": self.remote.as_dict() if self.remote else None})

    class Output(Output):
        """A combo output: its type is the option list (as a classic node's RETURN_TYPES entry would be)."""

        def __init__(self, id: str | None = None, display_name: str | None = None, options: list | None = None,
                     tooltip: str | None = None, is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []

        @property
        def io_type(self) -> Any:
            return self.options


@comfytype(io_type="COMBO")
class MultiCombo(ComfyTypeI):
    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: list, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: list | None = None,
                     placeholder: str | None = None, chip: bool | None = None,
                     control_after_generate: bool | None = None, socketless: bool | None = None):
            super().__init__(id, options, display_name, optional, tooltip, lazy, default, control_after_generate,
                             socketless=socketless)
            self.multiselect = True
            self.placeholder = placeholder
            self.chip = chip

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"multi_select": self.multiselect, "placeholder": self.placeholder,
                                                   "chip": self.chip})


@comfytype(io_type="WEBCAM")
class Webcam(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: str | None = None,
                     socketless: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)


def _socket_type(name: str, io_type: str, doc: str = "") -> type:
    """A plain ComfyType (``io.Image``, ``io.Model``, ...): an input and an output of ``io_type``."""
    made = comfytype(io_type=io_type)(type(name, (ComfyTypeIO,), {"Type": Any, "__doc__": doc or None}))
    made.__module__ = __name__
    return made


# ComfyUI 0.3.64's socket types (name, io_type); their Python ``Type`` hints are not enforced anywhere.
_SOCKET_TYPES = (
    ("Image", "IMAGE"), ("WanCameraEmbedding", "WAN_CAMERA_EMBEDDING"), ("Mask", "MASK"), ("Latent", "LATENT"),
    ("Conditioning", "CONDITIONING"), ("Sampler", "SAMPLER"), ("Sigmas", "SIGMAS"), ("Noise", "NOISE"),
    ("Guider", "GUIDER"), ("Clip", "CLIP"), ("ControlNet", "CONTROL_NET"), ("Vae", "VAE"), ("Model", "MODEL"),
    ("ClipVision", "CLIP_VISION"), ("ClipVisionOutput", "CLIP_VISION_OUTPUT"), ("StyleModel", "STYLE_MODEL"),
    ("Gligen", "GLIGEN"), ("UpscaleModel", "UPSCALE_MODEL"), ("Audio", "AUDIO"), ("Video", "VIDEO"),
    ("SVG", "SVG"), ("LoraModel", "LORA_MODEL"), ("LossMap", "LOSS_MAP"), ("Voxel", "VOXEL"), ("Mesh", "MESH"),
    ("Hooks", "HOOKS"), ("HookKeyframes", "HOOK_KEYFRAMES"), ("TimestepsRange", "TIMESTEPS_RANGE"),
    ("LatentOperation", "LATENT_OPERATION"), ("FlowControl", "FLOW_CONTROL"), ("Accumulation", "ACCUMULATION"),
    ("Load3DCamera", "LOAD3D_CAMERA"), ("Load3D", "LOAD_3D"), ("Load3DAnimation", "LOAD_3D_ANIMATION"),
    ("Photomaker", "PHOTOMAKER"), ("Point", "POINT"), ("FaceAnalysis", "FACE_ANALYSIS"), ("BBOX", "BBOX"),
    ("SEGS", "SEGS"), ("AnyType", "*"), ("MODEL_PATCH", "MODEL_PATCH"), ("AudioEncoder", "AUDIO_ENCODER"),
    ("AudioEncoderOutput", "AUDIO_ENCODER_OUTPUT"),
)
for _name, _io_type in _SOCKET_TYPES:
    globals()[_name] = _socket_type(_name, _io_type)
del _name, _io_type


@comfytype(io_type="COMFY_MULTITYPED_V3")
class MultiType:
    Type = Any

    class Input(Input):
        """An input that takes several socket types (``"IMAGE,MASK"``). When ``id`` is itself an input
        (``io.Int.Input("x", min=0)``), that input supplies the widget and its options."""

        def __init__(self, id: str | Input, types: list, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None):
            self.input_override = None
            if isinstance(id, Input):
                template = id
                self.input_override = copy.copy(template)
                optional = True if template.optional is True else optional
                tooltip = template.tooltip if template.tooltip is not None else tooltip
                display_name = template.display_name if template.display_name is not None else display_name
                lazy = template.lazy if template.lazy is not None else lazy
                id = template.id
                if isinstance(self.input_override, WidgetInput):
                    self.input_override.widget_type = self.input_override.get_io_type()
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self._io_types = types

        @property
        def io_types(self) -> list[type]:
            return [t if is_class(t) else type(t) for t in self._io_types]

        def get_io_type(self) -> Any:
            names = [t.io_type for t in self.io_types]
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict:
            if self.input_override is not None:
                return self.input_override.as_dict() | super().as_dict()
            return super().as_dict()


class DynamicInput(Input, ABC):
    """An input that stands for several inputs in ``/object_info`` (:meth:`get_dynamic`)."""

    @abstractmethod
    def get_dynamic(self) -> list[Input]:
        ...


class DynamicOutput(Output, ABC):
    @abstractmethod
    def get_dynamic(self) -> list[Output]:
        ...


@comfytype(io_type="COMFY_AUTOGROW_V3")
class AutogrowDynamic(ComfyTypeI):
    Type = list

    class Input(DynamicInput):
        """``min`` .. ``max`` copies of ``template_input`` named ``<id><n>_$<group>_ag$`` (those past
        ``min`` optional); widgets among them become sockets."""

        def __init__(self, id: str, template_input: Input, min: int = 1, max: int | None = None,
                     display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, extra_dict: dict | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            if (min is not None and min < 1) or (max is not None and max < 1):
                raise ValueError(f"Autogrow input {id!r}: min and max must be at least 1 (got {min}, {max})")
            self.template_input = template_input
            self.min = min
            self.max = max

        def get_dynamic(self) -> list[Input]:
            made = []
            for number in range(1, max(self.min or 1, self.max or 0) + 1):
                item = copy.copy(self.template_input)
                item.id = f"{item.id}{number}_${self.id}_ag$"
                if item.display_name is not None:
                    item.display_name = f"{item.display_name}{number}"
                item.optional = (self.optional or item.optional) if number <= self.min else True
                if isinstance(self.template_input, WidgetInput):
                    item.force_input = True
                made.append(item)
            return made


@comfytype(io_type="COMFY_COMBODYNAMIC_V3")
class ComboDynamic(ComfyTypeI):
    class Input(DynamicInput):
        def __init__(self, id: str):
            super().__init__(id)

        def get_dynamic(self) -> list[Input]:
            return []


@comfytype(io_type="COMFY_MATCHTYPE_V3")
class MatchType(ComfyTypeIO):
    class Template:
        def __init__(self, template_id: str, allowed_types: Any = None):
            self.template_id = template_id
            if allowed_types is None:
                allowed_types = []
            self.allowed_types = allowed_types if isinstance(allowed_types, list) else [allowed_types]

        def as_dict(self) -> dict:
            return {"template_id": self.template_id,
                    "allowed_types": "".join(t.io_type for t in self.allowed_types)}

    class Input(DynamicInput):
        def __init__(self, id: str, template: Any, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def get_dynamic(self) -> list[Input]:
            return [self]

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"template": self.template.as_dict()})

    class Output(DynamicOutput):
        def __init__(self, id: str, template: Any, display_name: str | None = None, tooltip: str | None = None,
                     is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template

        def get_dynamic(self) -> list[Output]:
            return [self]

        def as_dict(self) -> dict:
            return super().as_dict() | prune_dict({"template": self.template.as_dict()})


# --- hidden inputs -----------------------------------------------------------------------------------

class Hidden(str, Enum):
    """The hidden values a node may ask for (``Schema(hidden=[io.Hidden.unique_id])``)."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """``cls.hidden`` inside ``execute``: the hidden values the schema asked for, None for the others."""

    def __init__(self, unique_id: Any = None, prompt: Any = None, extra_pnginfo: Any = None, dynprompt: Any = None,
                 auth_token_comfy_org: Any = None, api_key_comfy_org: Any = None, **kwargs: Any):
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt
        self.auth_token_comfy_org = auth_token_comfy_org
        self.api_key_comfy_org = api_key_comfy_org

    def __getattr__(self, key: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, values: dict | None) -> HiddenHolder:
        values = values or {}
        return cls(**{member.name: values.get(member) for member in Hidden})


def _hidden_from_context(kinds: list[Hidden] | None) -> HiddenHolder:
    """The hidden values of the running node (Plexus's node context), or all None outside a run."""
    context = current_context()
    if context is None or not kinds:
        return HiddenHolder.from_dict(None)
    return HiddenHolder.from_dict({kind: context.hidden(kind.value) for kind in kinds})


# --- the schema --------------------------------------------------------------------------------------

@dataclass
class NodeInfoV1:
    input: dict = None
    input_order: dict = None
    output: list = None
    output_is_list: list = None
    output_name: list = None
    output_tooltips: list = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: Any = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


@dataclass
class NodeInfoV3:
    input: dict = None
    output: dict = None
    hidden: list = None
    name: str = None
    display_name: str = None
    description: str = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None
    python_module: Any = None


def add_to_dict_v1(item: Input, inputs: dict) -> None:
    entry = item.as_dict()
    entry.pop("optional", None)
    inputs.setdefault("optional" if item.optional else "required", {})[item.id] = (item.get_io_type(), entry)


def add_to_dict_v3(item: Input | Output, target: dict) -> None:
    target[item.id] = (item.get_io_type(), item.as_dict())


@dataclass
class Schema:
    """What a V3 node declares in ``define_schema``."""

    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        """Raise ValueError when input or output ids repeat (within or across the two lists)."""
        input_ids = [i.id for i in self.inputs or []]
        output_ids = [o.id for o in self.outputs or []]
        problems = []
        for kind, ids in (("Input", input_ids), ("Output", output_ids)):
            repeated = [name for name, count in Counter(ids).items() if count > 1]
            if repeated:
                problems.append(f"{kind} ids must be unique, but {repeated} are not.")
        shared = set(input_ids) & set(output_ids)
        if shared:
            problems.append(f"Ids must be unique between inputs and outputs, but {shared} are not.")
        if problems:
            raise ValueError(f"node {self.node_id!r}: " + "\n".join(problems))

    def finalize(self) -> None:
        """Add the hidden values the flags imply (API nodes: the comfy.org keys; output nodes: prompt and
        extra_pnginfo) and give outputs without an id ``_<index>_<type>_``."""
        wanted = []
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        if self.is_output_node:
            wanted += [Hidden.prompt, Hidden.extra_pnginfo]
        for kind in wanted:
            if self.hidden is None:
                self.hidden = []
            if kind not in self.hidden:
                self.hidden.append(kind)
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def _v1_inputs(self) -> dict:
        inputs: dict = {"required": {}}
        for item in self.inputs or []:
            for expanded in (item.get_dynamic() if isinstance(item, DynamicInput) else [item]):
                add_to_dict_v1(expanded, inputs)
        for kind in self.hidden or []:
            inputs.setdefault("hidden", {})[kind.name] = (kind.value,)
        return inputs

    def get_v1_info(self, cls: type) -> NodeInfoV1:
        inputs = self._v1_inputs()
        outputs = self.outputs or []
        return NodeInfoV1(
            input=inputs, input_order={section: list(entries) for section, entries in inputs.items()},
            output=[o.io_type for o in outputs], output_is_list=[o.is_output_list for o in outputs],
            output_name=[o.display_name or o.io_type for o in outputs],
            output_tooltips=[o.tooltip or None for o in outputs], name=self.node_id,
            display_name=self.display_name, description=self.description,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes", category=self.category,
            output_node=self.is_output_node, deprecated=self.is_deprecated, experimental=self.is_experimental,
            api_node=self.is_api_node)

    def get_v3_info(self, cls: type) -> NodeInfoV3:
        inputs: dict = {}
        outputs: dict = {}
        for item in self.inputs or []:
            add_to_dict_v3(item, inputs)
        for item in self.outputs or []:
            add_to_dict_v3(item, outputs)
        return NodeInfoV3(
            input=inputs, output=outputs, hidden=[kind.value for kind in self.hidden or []], name=self.node_id,
            display_name=self.display_name, description=self.description, category=self.category,
            output_node=self.is_output_node, deprecated=self.is_deprecated, experimental=self.is_experimental,
            api_node=self.is_api_node, python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes")


# --- results -----------------------------------------------------------------------------------------

class _UIOutput(ABC):
    """What a node shows in the editor (``ui.PreviewImage`` ...): ``as_dict()`` is the ``executed`` output."""

    @abstractmethod
    def as_dict(self) -> dict:
        ...


class NodeOutput(_NodeOutputInternal):
    """A V3 node's result: the output values in order, plus ``ui``, ``expand`` (a subgraph; the schema
    must set ``enable_expand``) or ``block_execution`` (a message: the outputs block what they feed)."""

    def __init__(self, *args: Any, ui: _UIOutput | dict | None = None, expand: dict | None = None,
                 block_execution: str | None = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple | None:
        return self.args if len(self.args) > 0 else None

    @classmethod
    def from_dict(cls, data: dict) -> NodeOutput:
        """A classic result dict (``{"result": (...), "ui": {...}, "expand": {...}}``) as a NodeOutput."""
        returned = read_result(data)
        if isinstance(returned.result, ExecutionBlocker):
            return cls(block_execution=returned.result.message)
        return cls(*(returned.result or ()), ui=returned.ui, expand=returned.expand)

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


def _normalized(cls: type, returned: Any) -> NodeOutput:
    """What ``execute`` returned as a NodeOutput (ComfyUI accepts None, a tuple, a dict or a blocker too)."""
    if returned is None:
        output = NodeOutput()
    elif isinstance(returned, NodeOutput):
        output = returned
    elif isinstance(returned, tuple):
        output = NodeOutput(*returned)
    elif isinstance(returned, dict):
        output = NodeOutput.from_dict(returned)
    elif isinstance(returned, ExecutionBlocker):
        output = NodeOutput(block_execution=returned.message)
    else:
        raise TypeError(f"node {cls.__name__}: execute returned a {type(returned).__name__}; a V3 node returns "
                        f"io.NodeOutput(...) (or a tuple of its outputs)")
    if output.expand is not None and not cls.GET_SCHEMA().enable_expand:
        raise ValueError(f"node {cls.__name__} returned an 'expand' graph, but its Schema does not set "
                         f"enable_expand=True")
    return output


def _classic_result(cls: type, output: NodeOutput) -> dict:
    """A NodeOutput as the classic ``{"result", "ui", "expand"}`` dict the engine takes."""
    result: Any = tuple(output.args)
    if output.block_execution is not None:   # the engine blocks every output for one blocker
        result = ExecutionBlocker(output.block_execution)
    ui = output.ui if output.ui is None or isinstance(output.ui, dict) else output.ui.as_dict()
    return node_result(result, ui=ui, expand=output.expand)


# --- the node class ----------------------------------------------------------------------------------

_SCHEMA_SLOT = "_plexus_schema"     # the finalized schema, cached in each class's own __dict__


def _schema_property(read: Callable[[Schema], Any]) -> classproperty:
    return classproperty(lambda cls: read(cls.GET_SCHEMA()))


def _outputs(schema: Schema) -> list:
    return schema.outputs or []


class _ComfyNodeBaseInternal(_ComfyNodeInternal):
    """The machinery behind :class:`ComfyNode`; define nodes on ComfyNode."""

    RELATIVE_PYTHON_MODULE = None
    HIDDEN_FROM_CONTEXT = True      # Plexus's engine: hidden values are read from the node context
    resources = None
    hidden: HiddenHolder | None = None

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        """Override to check inputs before the run (ComfyUI's VALIDATE_INPUTS): True, or a message."""
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        """Override to decide re-runs (ComfyUI's IS_CHANGED): a new value means the node runs again."""
        raise NotImplementedError

    # check_lazy_status: a subclass defines it to name the lazy inputs it still needs. The base has none
    # (ComfyUI's placeholder is never called either): without it, lazy inputs are never evaluated.

    def __init__(self) -> None:
        self.local_resources = None
        type(self).VALIDATE_CLASS()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Expose a subclass's own ``validate_inputs`` / ``fingerprint_inputs`` under the classic names the
        engine reads (with their signatures, which decide the arguments they get)."""
        super().__init_subclass__(**kwargs)
        for v3_name, classic_name in (("validate_inputs", "VALIDATE_INPUTS"), ("fingerprint_inputs", "IS_CHANGED")):
            defined = cls.__dict__.get(v3_name)
            if isinstance(defined, classmethod):
                setattr(cls, classic_name, _on_clone(defined.__func__, v3_name))
            elif defined is not None:   # a staticmethod or plain function: used as it is
                setattr(cls, classic_name, defined)

    @classmethod
    def GET_BASE_CLASS(cls) -> type:  # noqa: N802
        return _ComfyNodeBaseInternal

    @classmethod
    def VALIDATE_CLASS(cls) -> None:  # noqa: N802
        for name in ("define_schema", "execute"):
            if first_real_override(cls, name) is None:
                raise TypeError(f"node class {cls.__name__} defines no {name} classmethod; a V3 node needs "
                                f"define_schema and execute")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:  # noqa: N802
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802
        """The class's finalized, validated schema (built on first use)."""
        schema = cls.__dict__.get(_SCHEMA_SLOT)
        if schema is None:
            cls.VALIDATE_CLASS()
            schema = cls.FINALIZE_SCHEMA()
            schema.validate()
            setattr(cls, _SCHEMA_SLOT, schema)
        return schema

    @classproperty
    def SCHEMA(cls) -> Schema:  # noqa: N802
        return cls.GET_SCHEMA()

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None) -> type:  # noqa: N802
        """A throw-away subclass whose ``hidden`` holds ``hidden_inputs`` (``{Hidden.x: value}``)."""
        clone = shallow_clone_class(cls)
        clone.hidden = HiddenHolder.from_dict(hidden_inputs)
        return clone

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))

    @classmethod
    def GET_NODE_INFO_V3(cls) -> dict[str, Any]:  # noqa: N802
        return asdict(cls.GET_SCHEMA().get_v3_info(cls))

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True, return_schema: bool = False) -> Any:  # noqa: N802
        schema = cls.FINALIZE_SCHEMA()
        inputs = schema.get_v1_info(cls).input
        if not include_hidden:
            inputs.pop("hidden", None)
        return (inputs, schema) if return_schema else inputs

    # the classic protocol, read from the schema
    DESCRIPTION = _schema_property(lambda s: s.description)
    CATEGORY = _schema_property(lambda s: s.category)
    EXPERIMENTAL = _schema_property(lambda s: s.is_experimental)
    DEPRECATED = _schema_property(lambda s: s.is_deprecated)
    API_NODE = _schema_property(lambda s: s.is_api_node)
    OUTPUT_NODE = _schema_property(lambda s: s.is_output_node)
    INPUT_IS_LIST = _schema_property(lambda s: s.is_input_list)
    NOT_IDEMPOTENT = _schema_property(lambda s: s.not_idempotent)
    RETURN_TYPES = _schema_property(lambda s: [o.io_type for o in _outputs(s)])
    RETURN_NAMES = _schema_property(lambda s: [o.display_name or o.io_type for o in _outputs(s)])
    OUTPUT_IS_LIST = _schema_property(lambda s: [o.is_output_list for o in _outputs(s)])
    OUTPUT_TOOLTIPS = _schema_property(lambda s: [o.tooltip or None for o in _outputs(s)])

    @classproperty
    def FUNCTION(cls) -> str:  # noqa: N802
        return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, **inputs: Any) -> dict:  # noqa: N802
        clone = cls.PREPARE_CLASS_CLONE(None)
        clone.hidden = _hidden_from_context(cls.GET_SCHEMA().hidden)
        return _classic_result(cls, _normalized(cls, clone.execute(**inputs)))

    @classmethod
    async def EXECUTE_NORMALIZED_ASYNC(cls, **inputs: Any) -> dict:  # noqa: N802
        clone = cls.PREPARE_CLASS_CLONE(None)
        clone.hidden = _hidden_from_context(cls.GET_SCHEMA().hidden)
        return _classic_result(cls, _normalized(cls, await clone.execute(**inputs)))


def _on_clone(function: Callable, name: str) -> classmethod:
    """``function`` (a V3 classmethod body) as a classic classmethod that runs on a clone with empty
    ``hidden`` (ComfyUI calls validate_inputs / fingerprint_inputs that way); the signature is kept."""
    if inspect.iscoroutinefunction(function):
        async def call(cls: type, *args: Any, **kwargs: Any) -> Any:
            return await function(cls.PREPARE_CLASS_CLONE(None), *args, **kwargs)
    else:
        def call(cls: type, *args: Any, **kwargs: Any) -> Any:
            return function(cls.PREPARE_CLASS_CLONE(None), *args, **kwargs)
    call.__name__ = name
    call.__wrapped__ = function
    call.__signature__ = inspect.signature(function)   # with ``cls``: binding the classmethod drops it
    return classmethod(call)


class ComfyNode(_ComfyNodeBaseInternal):
    """Base class of every V3 node: define ``define_schema`` and ``execute`` (both classmethods)."""

    @classmethod
    def GET_BASE_CLASS(cls) -> type:  # noqa: N802
        return ComfyNode


__all__ = [
    "FolderType", "UploadType", "RemoteOptions", "NumberDisplay", "comfytype", "Custom", "Input", "WidgetInput",
    "Output", "ComfyTypeI", "ComfyTypeIO", "Boolean", "Int", "Float", "String", "Combo", "MultiCombo", "Webcam",
    *[name for name, _ in _SOCKET_TYPES], "MultiType", "DynamicInput", "DynamicOutput", "AutogrowDynamic",
    "ComboDynamic", "MatchType", "HiddenHolder", "Hidden", "NodeInfoV1", "NodeInfoV3", "Schema", "ComfyNode",
    "NodeOutput", "add_to_dict_v1", "add_to_dict_v3",
]
