"""The editor's saved workflow format (``nodes``, ``links``, ``widgets_values``) to API format.

People keep their graphs as the files the editor saves; ComfyUI can only run those from a browser,
whose frontend turns them into an API prompt (``graphToPrompt``). This module does the same
conversion headless, from the node specs in a registry, following the frontend's rules:

- ``widgets_values`` fill the widget inputs in spec order (required, then optional); an INT or combo
  input with ``control_after_generate`` (and every INT named ``seed`` / ``noise_seed``) is followed by
  the control entry ("fixed", "randomize", ...), which is not sent. A widget converted to an input
  keeps its slot; a link into it overrides the value.
- A link into an input is followed through virtual nodes: ``Reroute`` passes its input through, a
  ``PrimitiveNode`` gives its value, a bypassed node (mode 4) passes through its first input whose
  type matches, a subgraph instance or group node leads to the node inside it.
- Muted nodes (mode 2), notes and virtual nodes are not emitted; inputs linked to a node that is not
  emitted are dropped.
- Subgraphs (``definitions.subgraphs``) and group nodes (``extra.groupNodes``, node type
  ``workflow>Name`` or the older ``workflow/Name``) are expanded; a node inside gets the id
  ``<instance id>:<inner id>`` (for group nodes the inner id is its index in the definition).

Both saved-format versions are read: 0.4 (``links`` as ``[id, from, from_slot, to, to_slot, type]``)
and 1 (``links`` as objects). Problems raise :class:`PlexusError` naming the node and the fix.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from execution.errors import PlexusError
from execution.replacements import replace_in_workflow

MODE_MUTED = 2   # LiteGraph "NEVER"
MODE_BYPASS = 4
SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"   # its value, then the chosen option's widgets ("name.sub")
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "mesh_upload", "animated_image_upload",
                  "file_upload")
SEED_NAMES = frozenset({"seed", "noise_seed"})
# Input types the newer editor draws as a widget of its own (its ComfyWidgets table beyond the five
# above: ImageCompare's IMAGECOMPARE slider, COLOR pickers, CURVE editors, ...). Editors older than the
# widget made a socket of them and saved no value, and the newer ones save null where the widget is not
# persisted (ImageCompare's), so each is a soft slot: a saved value fills it, a missing one is skipped,
# and a null is not sent.
EDITOR_WIDGET_TYPES = frozenset({"MARKDOWN", "IMAGEUPLOAD", "COLOR", "IMAGECOMPARE", "BOUNDING_BOX", "CHART",
                                 "GALLERIA", "PAINTER", "COMPOSITOR", "TEXTAREA", "CURVE", "RANGE",
                                 "VIDEO_EDIT", "RESOLUTION_PREVIEW", "BOUNDING_BOXES", "COLORS"})
# Widgets an editor extension appends after a core node's own widgets, as (name, sent), where sent says
# whether the editor sends it as an input. Each editor version saves some prefix of them (none, nulls, or
# values), so they are soft slots; a name ending in "*" stands for any number of widgets (sent: never).
#   PreviewAny: the frontend's previewAny.ts adds preview_markdown, preview_text and previewMode (display
#     only; none is sent).
#   CustomCombo: customCombo.ts adds a hidden "index" (the chosen option's position, an int, sent) and
#     the option texts option0, option1, ... (the node's choices, which only the editor needs).
#   GetImageSize: the text it sends while running (send_progress_text) is shown in the frontend's
#     "$$node-text-preview" widget, which editors of mid-2025 saved (image_omnigen2_image_edit; the
#     newer ones mark it serialize: false). Display only.
EDITOR_ADDED_WIDGETS: dict[str, tuple[tuple[str, bool], ...]] = {
    "PreviewAny": (("preview_markdown", False), ("preview_text", False), ("previewMode", False)),
    "CustomCombo": (("index", True), ("option*", False)),
    "GetImageSize": (("$$node-text-preview", False),),
}
# What a saved value of an editor-added widget must look like to be taken as that widget's.
EDITOR_WIDGET_VALUES: dict[str, Callable[[Any], bool]] = {
    "index": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "$$node-text-preview": lambda value: isinstance(value, str),
}


def workflow_to_prompt(workflow: dict[str, Any], registry: Any) -> dict[str, dict[str, Any]]:
    """The API prompt (``{id: {"inputs", "class_type", "_meta"}}``) the editor would queue for ``workflow``.

    ``registry`` is a NodeRegistry, or anything whose ``get(class_type)`` returns a node class with
    ``INPUT_TYPES()`` (and optionally ``display_name(class_type)`` for ``_meta.title``).
    """
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise PlexusError("invalid_workflow", "Not a saved workflow: expected an object with a 'nodes' list",
                          "API-format prompts (an object of node ids) can be queued as they are")
    return _Converter(replace_in_workflow(workflow, registry), registry).convert()  # renamed classes first


# -- the graph model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass
class _Graph:
    """One level of nodes and links: the workflow itself, a subgraph definition or a group definition."""
    label: str
    nodes: dict[str, dict[str, Any]]
    links: dict[Any, _Link]


@dataclass
class _Container:
    """What a subgraph instance or group node expands to: an inner graph and where its outputs come from."""
    graph: _Graph
    outputs: list[tuple[str, int] | None]
    widget_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # inner id -> {input: value}
    is_group: bool = False
    input_names: list[str] = field(default_factory=list)  # a subgraph definition's inputs, by slot


@dataclass
class _Node:
    exec_id: str
    raw: dict[str, Any]
    graph: _Graph
    instance: _Node | None          # the subgraph / group node this one sits in
    mode: int
    kind: str                       # "node", "reroute", "primitive", "note", "container"
    container: _Container | None = None

    @property
    def type(self) -> str:
        return str(self.raw.get("type"))

    def describe(self) -> str:
        title = self.raw.get("title")
        return f"{self.type} #{self.exec_id}" + (f" ('{title}')" if title and title != self.type else "")


@dataclass(frozen=True)
class _Origin:
    node_id: str
    slot: int


@dataclass(frozen=True)
class _Value:
    value: Any


def _node_error(node: _Node | None, message: str, details: str = "") -> PlexusError:
    extra = {} if node is None else {"node_id": node.exec_id, "node_type": node.type}
    where = "" if node is None else f"{node.describe()}: "
    return PlexusError("invalid_workflow", where + message, details, extra)


def _parse_links(raw_links: Any, label: str) -> dict[Any, _Link]:
    """Links of either format: 0.4 arrays ``[id, from, from_slot, to, to_slot, type]`` or 1.0 objects."""
    links: dict[Any, _Link] = {}
    for raw in raw_links or []:
        if raw is None:
            continue
        try:
            if isinstance(raw, dict):
                link_id, origin, origin_slot = raw["id"], raw["origin_id"], raw["origin_slot"]
                target, target_slot, link_type = raw["target_id"], raw["target_slot"], raw.get("type")
            else:
                link_id, origin, origin_slot, target, target_slot = raw[:5]
                link_type = raw[5] if len(raw) > 5 else None
            links[link_id] = _Link(str(origin), int(origin_slot), str(target), int(target_slot), link_type)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PlexusError("invalid_workflow", f"Malformed link in {label}: {raw!r}",
                              "a link is [id, from_node, from_slot, to_node, to_slot, type] or an object "
                              "with id, origin_id, origin_slot, target_id, target_slot, type") from exc
    return links


def _types_match(a: Any, b: Any) -> bool:
    """LiteGraph's connection rule: equal, a wildcard on either side, or a shared comma-separated type."""
    if a in ("*", "", 0, None) or b in ("*", "", 0, None):
        return True
    a_text, b_text = str(a).upper(), str(b).upper()
    if a_text == b_text:
        return True
    return bool({t.strip() for t in a_text.split(",")} & {t.strip() for t in b_text.split(",")})


def _wrap(value: Any) -> Any:
    """The frontend boxes list values so the server does not take them for links."""
    return {"__value__": value} if isinstance(value, list) else value


# -- node specs --------------------------------------------------------------------------------------


# Entries the editor saves after a widget's own value, in this order, when it has them:
#   "control": the "control after generate" mode ("fixed", "randomize", ...) of INT / FLOAT / combo
#               widgets with control_after_generate (and INT seed / noise_seed);
#   "filter":   the control_filter_list text that combo controls add ("" unless the user typed one);
#   "upload":   the upload button's value ("image") after an image_upload combo.
# None of them is an input. Editor versions differ in which they save (the newest save no control
# entries at all), so each is optional and the matcher below tries the saved values both ways.
EXTRA_MATCHES = {
    "control": lambda value: isinstance(value, str) and value in CONTROL_VALUES,
    "filter": lambda value: isinstance(value, str),
    "upload": lambda value: True,
}


@dataclass(frozen=True)
class _WidgetSlot:
    name: str
    default: Any
    extras: tuple[str, ...] = ()
    is_force_input: bool = False
    is_soft: bool = False      # may be absent from widgets_values (EDITOR_WIDGET_TYPES, EDITOR_ADDED_WIDGETS)
    is_sent: bool = True       # False for an editor's display widget: never an input of the prompt
    is_rest: bool = False      # takes every value left (an editor-added "name*" widget)
    fits: Callable[[Any], bool] | None = None   # the saved value it takes must pass this (EDITOR_WIDGET_VALUES)
    # a DynamicCombo: (option key, the widget slots that follow its value when chosen) per option
    dynamic: tuple[tuple[str, tuple[_WidgetSlot, ...]], ...] | None = None

    def describe(self) -> str:
        return self.name + "".join(f" (+{extra})" for extra in self.extras)


def _spec_inputs(cls: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(name, type, options)`` for each required then optional input, in declaration order."""
    return _section_inputs(cls.INPUT_TYPES() or {})


def _section_inputs(declared: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    found = []
    for section in ("required", "optional"):
        for name, raw in (declared.get(section) or {}).items():
            if isinstance(raw, (list, tuple)) and raw:
                options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
                found.append((name, raw[0], options))
            else:
                found.append((name, raw, {}))
    return found


def _is_widget(input_type: Any) -> bool:
    return isinstance(input_type, (list, tuple)) or input_type in WIDGET_TYPES or input_type == DYNAMIC_COMBO


def _is_combo(input_type: Any) -> bool:
    return isinstance(input_type, (list, tuple)) or input_type == "COMBO"


def _widget_extras(name: str, input_type: Any, options: dict[str, Any]) -> tuple[str, ...]:
    """The entries the editor saves after this widget's value (see EXTRA_MATCHES)."""
    extras: tuple[str, ...] = ()
    if "control_after_generate" in options:
        has_control = bool(options["control_after_generate"])
    else:
        has_control = input_type == "INT" and name in SEED_NAMES
    if has_control and _is_combo(input_type):
        extras = ("control", "filter")
    elif has_control and input_type in ("INT", "FLOAT"):
        extras = ("control",)
    if any(options.get(key) for key in UPLOAD_OPTIONS):
        extras += ("upload",)
    return extras


def _widget_slots(cls: Any, class_type: str | None = None) -> list[_WidgetSlot]:
    added = [_WidgetSlot(name.rstrip("*"), None, is_soft=True, is_sent=sent, is_rest=name.endswith("*"),
                         fits=EDITOR_WIDGET_VALUES.get(name))
             for name, sent in EDITOR_ADDED_WIDGETS.get(class_type or "", ())]
    return _slots_of(_spec_inputs(cls), "") + added


def _slots_of(inputs: list[tuple[str, Any, dict[str, Any]]], prefix: str) -> list[_WidgetSlot]:
    slots = []
    for short_name, input_type, options in inputs:
        name = prefix + short_name
        if isinstance(input_type, str) and input_type in EDITOR_WIDGET_TYPES:
            slots.append(_WidgetSlot(name, options.get("default"), is_force_input=bool(options.get("forceInput")),
                                     is_soft=True))
            continue
        if not _is_widget(input_type):
            continue
        if input_type == DYNAMIC_COMBO:
            choices = tuple((str(option["key"]), tuple(_slots_of(_section_inputs(option.get("inputs") or {}),
                                                                  name + ".")))
                            for option in options.get("options") or [] if isinstance(option, dict) and "key" in option)
            default = options.get("default", choices[0][0] if choices else None)
            slots.append(_WidgetSlot(name, default, (), bool(options.get("forceInput")), dynamic=choices))
            continue
        default = options.get("default")
        if default is None and _is_combo(input_type):
            choices = input_type if isinstance(input_type, (list, tuple)) else options.get("options") or []
            default = choices[0] if choices else None
        slots.append(_WidgetSlot(name, default, _widget_extras(name, input_type, options),
                                 bool(options.get("forceInput"))))
    return slots


def _expansions(slots: list[_WidgetSlot]) -> list[tuple[list[_WidgetSlot], dict[str, str]]]:
    """Every flat slot list a DynamicCombo's choices can give (each option's widgets after the combo's
    value), with the choice each one assumes: {combo name: option key}. Without DynamicCombos, the slots."""
    if not any(slot.dynamic is not None for slot in slots):
        return [(slots, {})]
    index = next(i for i, slot in enumerate(slots) if slot.dynamic is not None)
    head, slot, tail = slots[:index], slots[index], slots[index + 1:]
    found = []
    for key, inner in slot.dynamic or ():
        for flat, assumed in _expansions([*inner, *tail]):
            found.append(([*head, replace(slot, dynamic=None), *flat], {slot.name: key, **assumed}))
    return found


def _map_widget_values(node: _Node, slots: list[_WidgetSlot]) -> dict[str, Any]:
    """Widget values by input name, from the node's ``widgets_values`` list (or name-keyed object)."""
    values = node.raw.get("widgets_values")
    if values is None:
        return _defaults(slots)
    if isinstance(values, dict):  # some extensions save widgets by name
        sent = [slot for slot in slots if slot.is_sent]
        return {name: values[name] for name in _names(sent, values) if name in values}
    if not isinstance(values, list):
        raise _node_error(node, "widgets_values must be a list", f"got {type(values).__name__}")
    plain = [slot for slot in slots if not slot.is_force_input]
    trimmed = list(values)
    while trimmed and trimmed[-1] is None:   # display-only widgets of a newer node (PreviewAny's three) save null
        trimmed.pop()
    for listed in (values, trimmed) if len(trimmed) != len(values) else (values,):
        for candidate in (plain, slots) if len(plain) != len(slots) else (plain,):
            for flat, assumed in _expansions(candidate):
                mapped = _consume(listed, flat)  # older editors also kept a value for forceInput widgets
                if mapped is not None:
                    found = {slot.name: value for slot, value in mapped
                             if slot.is_sent and not (slot.is_soft and value is None)}
                    if all(found.get(name) == key for name, key in assumed.items()):
                        return found
    # The editor assigns saved values to its widgets by position and leaves the widgets past the last
    # saved value at their defaults (litegraph's LGraphNode.configure), so a workflow saved before a
    # node gained trailing widgets still loads: fill those from the spec, as the editor would send them.
    # Only when no full match exists; a surplus value is still refused.
    for flat, assumed in _expansions(plain):
        mapped = _consume(values, flat, fill_trailing=True)
        if mapped is not None:
            found = {slot.name: value for slot, value in mapped
                     if slot.is_sent and not (slot.is_soft and value is None)}
            if all(found.get(name) == key for name, key in assumed.items()):
                return found
    expected = ", ".join(slot.describe() for slot in plain if slot.is_sent)
    raise _node_error(node, f"widget count mismatch: {len(values)} widgets_values for the widget inputs "
                            f"[{expected}]",
                      f"widgets_values={values!r}; the node's spec may differ from the one the workflow "
                      f"was saved with (update the node pack, or re-save the workflow in the editor)")


def _defaults(slots: list[_WidgetSlot]) -> dict[str, Any]:
    """Each widget's default; a DynamicCombo's default option brings its own widgets' defaults."""
    found: dict[str, Any] = {}
    for slot in slots:
        if slot.default is None or slot.is_force_input or not slot.is_sent:
            continue
        found[slot.name] = slot.default
        for key, inner in slot.dynamic or ():
            if key == slot.default:
                found.update(_defaults(list(inner)))
    return found


def _names(slots: list[_WidgetSlot], values: dict[str, Any]) -> list[str]:
    """Widget names for a name-keyed widgets_values: the chosen DynamicCombo options' widgets included."""
    names = []
    for slot in slots:
        names.append(slot.name)
        for key, inner in slot.dynamic or ():
            if values.get(slot.name, slot.default) == key:
                names += _names(list(inner), values)
    return names


def _consume(values: list[Any], slots: list[_WidgetSlot],
             fill_trailing: bool = False) -> list[tuple[_WidgetSlot, Any]] | None:
    """``(slot, value)`` for each slot that has a saved value, skipping each slot's saved extras; None if
    ``values`` cannot be split so. With ``fill_trailing``, the slots left when the values run out take
    their defaults (a DynamicCombo's default option's widgets are not among them: see the caller).

    Extras are taken when the saved value fits them (longest run first) and dropped when the counts
    say they were not saved; a soft slot takes a value when the counts allow and is left out when they
    do not. A small memoised search over (slot, position) settles it.
    """
    failed: set[tuple[int, int]] = set()

    def walk(index: int, position: int) -> list[tuple[_WidgetSlot, Any]] | None:
        if index == len(slots):
            return [] if position == len(values) else None
        if fill_trailing and position == len(values) and position > 0:
            return [(slot, slot.default) for slot in slots[index:] if not slot.is_soft and not slot.is_rest]
        if (index, position) in failed:
            return None
        slot = slots[index]
        if slot.is_rest:
            rest = walk(index + 1, len(values))
            return [(slot, values[position:])] + rest if rest is not None else None
        if position < len(values) and (slot.fits is None or slot.fits(values[position])):
            for taken in range(len(slot.extras), -1, -1):
                following = values[position + 1:position + 1 + taken]
                if len(following) == taken and all(EXTRA_MATCHES[kind](value)
                                                   for kind, value in zip(slot.extras, following)):
                    rest = walk(index + 1, position + 1 + taken)
                    if rest is not None:
                        return [(slot, values[position])] + rest
        if slot.is_soft:
            rest = walk(index + 1, position)
            if rest is not None:
                return rest
        failed.add((index, position))
        return None

    return walk(0, 0)


# -- the conversion ----------------------------------------------------------------------------------


class _Converter:
    def __init__(self, workflow: dict[str, Any], registry: Any):
        self.workflow = workflow
        self.registry = registry
        self.subgraphs: dict[str, dict[str, Any]] = {}
        self._collect_subgraphs(workflow)
        self.group_defs: dict[str, Any] = dict(((workflow.get("extra") or {}).get("groupNodes") or {}))
        self.nodes: dict[str, _Node] = {}
        self._classes: dict[str, Any] = {}

    def _collect_subgraphs(self, graph: dict[str, Any]) -> None:
        for definition in ((graph.get("definitions") or {}).get("subgraphs") or []):
            if isinstance(definition, dict) and "id" in definition and definition["id"] not in self.subgraphs:
                self.subgraphs[str(definition["id"])] = definition
                self._collect_subgraphs(definition)

    def node_class(self, node: _Node) -> Any:
        if node.type not in self._classes:
            cls = self.registry.get(node.type)
            if cls is None:
                raise _node_error(node, f"unknown node type '{node.type}'",
                                  "install the node pack that provides it, or remove the node from the "
                                  "workflow")
            self._classes[node.type] = cls
        return self._classes[node.type]

    # building the flat node table

    def convert(self) -> dict[str, dict[str, Any]]:
        root = _Graph("the workflow", self._index_nodes(self.workflow["nodes"], "the workflow"),
                      _parse_links(self.workflow.get("links"), "the workflow"))
        self._add_graph(root, instance=None, prefix="", inherited_mode=None)
        return self._emit()

    def _index_nodes(self, raw_nodes: list[Any], label: str) -> dict[str, dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = {}
        for raw in raw_nodes:
            if not isinstance(raw, dict) or "id" not in raw or "type" not in raw:
                raise PlexusError("invalid_workflow", f"Malformed node in {label}: {str(raw)[:200]}",
                                  "every node needs an 'id' and a 'type'")
            nodes[str(raw["id"])] = raw
        return nodes

    def _add_graph(self, graph: _Graph, instance: _Node | None, prefix: str, inherited_mode: int | None,
                   containers: tuple[str, ...] = ()) -> None:
        """Add the nodes of ``graph`` (and, recursively, of the subgraphs and group nodes in it)."""
        ordered = sorted(graph.nodes.values(), key=lambda raw: (raw.get("order", 0) or 0))
        for raw in ordered:
            mode = int(raw.get("mode", 0) or 0)
            if inherited_mode is not None:
                mode = MODE_MUTED  # the instance is muted or bypassed: nothing inside runs
            node = _Node(prefix + str(raw["id"]), raw, graph, instance, mode, self._kind(raw))
            self.nodes[node.exec_id] = node
            if node.kind == "container":
                if node.type in containers:
                    raise _node_error(node, "a subgraph contains itself",
                                      " -> ".join(containers + (node.type,)))
                node.container = self._expand(node)
                inner_mode = mode if mode in (MODE_MUTED, MODE_BYPASS) else None
                self._add_graph(node.container.graph, node, node.exec_id + ":", inner_mode,
                                containers + (node.type,))

    def _kind(self, raw: dict[str, Any]) -> str:
        node_type = str(raw["type"])
        if node_type == "Reroute":
            return "reroute"
        if node_type == "PrimitiveNode":
            return "primitive"
        if node_type in NOTE_TYPES:
            return "note"
        if node_type in self.subgraphs or self._group_name(node_type) is not None:
            return "container"
        return "node"

    def _group_name(self, node_type: str) -> str | None:
        for prefix in GROUP_NODE_PREFIXES:
            if node_type.startswith(prefix) and node_type[len(prefix):] in self.group_defs:
                return node_type[len(prefix):]
        return None

    def _expand(self, node: _Node) -> _Container:
        if node.type in self.subgraphs:
            return self._expand_subgraph(node, self.subgraphs[node.type])
        from execution.workflow_groups import expand_group_node  # it builds on this module's types
        name = self._group_name(node.type)
        return expand_group_node(self, node, name, self.group_defs[name])

    def _expand_subgraph(self, node: _Node, definition: dict[str, Any]) -> _Container:
        label = f"subgraph '{definition.get('name') or node.type}'"
        graph = _Graph(label, self._index_nodes(definition.get("nodes") or [], label),
                       _parse_links(definition.get("links"), label))
        outputs: list[tuple[str, int] | None] = [None] * len(definition.get("outputs") or [])
        for link in graph.links.values():
            if link.target_id == SUBGRAPH_OUTPUT_ID:
                if link.target_slot >= len(outputs):
                    outputs.extend([None] * (link.target_slot + 1 - len(outputs)))
                outputs[link.target_slot] = (link.origin_id, link.origin_slot)
        names = [str(entry.get("name")) for entry in definition.get("inputs") or [] if isinstance(entry, dict)]
        return _Container(graph, outputs, input_names=names)

    # following links

    def _inner_node(self, graph: _Graph, instance: _Node | None, node_id: str, asking: _Node) -> _Node:
        exec_id = node_id if instance is None else f"{instance.exec_id}:{node_id}"
        found = self.nodes.get(exec_id)
        if found is None or found.graph is not graph:
            raise _node_error(asking, f"dangling link: it comes from node {node_id}, which is not in "
                                      f"{graph.label}",
                              "delete the link (or the node) in the editor and save again")
        return found

    def resolve_input(self, node: _Node, slot: int, visited: set,
                      link_type: Any = None) -> _Origin | _Value | None:
        """Where input ``slot`` of ``node`` gets its value: a node output, a literal, or nothing."""
        key = (node.exec_id, "in", slot)
        if key in visited:
            raise _node_error(node, f"links loop back on input {slot}",
                              "remove the cycle of reroutes / bypassed nodes")
        visited.add(key)
        inputs = node.raw.get("inputs") or []
        if slot >= len(inputs):
            raise _node_error(node, f"has no input slot {slot}",
                              "a link points at an input the node does not have")
        link_id = inputs[slot].get("link")
        if link_id is None:
            return None
        link = node.graph.links.get(link_id)
        if link is None:
            raise _node_error(node, f"dangling link {link_id} on input '{inputs[slot].get('name')}'",
                              f"there is no link {link_id} in {node.graph.label}; reconnect the input and "
                              f"save again")
        wanted_type = link_type if link_type is not None else inputs[slot].get("type")
        if link.origin_id == SUBGRAPH_INPUT_ID and node.instance is not None:
            return self._resolve_instance_input(node.instance, link.origin_slot, visited)
        origin = self._inner_node(node.graph, node.instance, link.origin_id, node)
        return self.resolve_output(origin, link.origin_slot, wanted_type, visited)

    def _resolve_instance_input(self, instance: _Node, slot: int, visited: set) -> _Origin | _Value | None:
        inputs = instance.raw.get("inputs") or []
        # The instance lists its inputs by name, possibly fewer or in another order than the
        # definition's slots (the editor saves only some): match the definition's slot by name.
        names = instance.container.input_names if instance.container is not None else []
        if slot < len(names):
            by_name = [i for i, raw in enumerate(inputs) if raw.get("name") == names[slot]]
            if by_name:
                slot = by_name[0]
            elif len(inputs) != len(names):
                return None
        if slot < len(inputs) and inputs[slot].get("link") is not None:
            return self.resolve_input(instance, slot, visited)
        if slot < len(inputs) and inputs[slot].get("widget") and not instance.container.is_group:
            value = _promoted_widget_value(instance, slot)
            if value is not None:
                return value
        return None

    def resolve_output(self, node: _Node, slot: int, link_type: Any, visited: set) -> _Origin | _Value | None:
        key = (node.exec_id, "out", slot)
        if key in visited:
            raise _node_error(node, f"links loop back on output {slot}",
                              "remove the cycle of reroutes / bypassed nodes")
        visited.add(key)
        if node.mode == MODE_BYPASS:
            index = _bypass_input(node, slot, link_type)
            return None if index < 0 else self.resolve_input(node, index, visited)
        if node.kind == "container":
            outputs = node.container.outputs
            if slot >= len(outputs) or outputs[slot] is None:
                return None
            inner_id, inner_slot = outputs[slot]
            inner = self._inner_node(node.container.graph, node, inner_id, node)
            return self.resolve_output(inner, inner_slot, link_type, visited)
        if node.kind == "reroute":
            return self.resolve_input(node, 0, visited, link_type) if node.raw.get("inputs") else None
        if node.kind == "primitive":
            values = node.raw.get("widgets_values") or []
            return _Value(values[0]) if values else None
        if node.kind == "note":
            return None
        return _Origin(node.exec_id, slot)

    # the API prompt

    def _emit(self) -> dict[str, dict[str, Any]]:
        prompt: dict[str, dict[str, Any]] = {}
        for node in self.nodes.values():
            if node.kind != "node" or node.mode in (MODE_MUTED, MODE_BYPASS):
                continue
            cls = self.node_class(node)
            widget_values = _map_widget_values(node, _widget_slots(cls, node.type))
            inputs = {name: _wrap(value) for name, value in widget_values.items()}
            if node.instance is not None and node.instance.container is not None:
                overrides = node.instance.container.widget_overrides.get(str(node.raw["id"]), {})
                inputs.update({name: _wrap(value) for name, value in overrides.items()})
            for slot, raw_input in enumerate(node.raw.get("inputs") or []):
                resolved = self.resolve_input(node, slot, set())
                if resolved is None:
                    continue
                name = raw_input.get("name")
                if isinstance(resolved, _Value):
                    inputs[name] = _wrap(resolved.value)
                else:
                    inputs[name] = [resolved.node_id, resolved.slot]
            prompt[node.exec_id] = {"inputs": inputs, "class_type": node.type,
                                    "_meta": {"title": self._title(node)}}
        for entry in prompt.values():  # inputs from nodes that are not emitted (muted) are dropped
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                    del entry["inputs"][name]
        return prompt

    def _title(self, node: _Node) -> str:
        title = node.raw.get("title")
        if title:
            return str(title)
        display_name = getattr(self.registry, "display_name", None)
        return str(display_name(node.type)) if callable(display_name) else node.type


def _bypass_input(node: _Node, slot: int, link_type: Any) -> int:
    """The input a bypassed node passes to output ``slot``: same index if it fits, else the first match."""
    inputs = node.raw.get("inputs") or []
    outputs = node.raw.get("outputs") or []
    output_type = outputs[slot].get("type") if slot < len(outputs) else None
    if link_type in ("*", "", None):
        return slot if len(inputs) > slot else (0 if inputs else -1)
    if slot < len(inputs) and _types_match(inputs[slot].get("type"), output_type) \
            and _types_match(inputs[slot].get("type"), link_type):
        return slot
    for index, raw_input in enumerate(inputs):
        if raw_input.get("type") == link_type:
            return index
    for index, raw_input in enumerate(inputs):
        input_type = raw_input.get("type")
        if _types_match(input_type, output_type) and _types_match(input_type, link_type):
            return index
    return -1


def _promoted_widget_value(instance: _Node, slot: int) -> _Value | None:
    """The value a subgraph instance shows for an unconnected widget input (its own widgets_values)."""
    values = instance.raw.get("widgets_values")
    if not isinstance(values, list) or not values:
        return None
    widget_slots = [index for index, raw in enumerate(instance.raw.get("inputs") or []) if raw.get("widget")]
    position = widget_slots.index(slot)
    return _Value(values[position]) if position < len(values) else None
