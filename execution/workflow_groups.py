"""Group nodes (the editor's older way to fold nodes into one) expanded into an inner graph.

A group node's definition lives in ``extra.groupNodes[name]``: ``nodes`` (serialized inner nodes, in
execution order; an inner node is addressed by its index), ``links`` as
``[from_index, from_slot, to_index, to_slot, from_id, type]`` and ``external`` as
``[index, output_slot, type]`` for outputs also used outside. The editor builds the group node's
sockets and widgets from the inner nodes' specs; this module rebuilds the same numbering:

- inputs: for each inner node in order, each link input (a non-widget input) not linked inside the
  group; then, after all nodes, each converted widget input not linked inside the group;
- widgets: each inner node's widget inputs in spec order (a linked PrimitiveNode contributes its
  ``value``, with a control entry for INT and combo values); converted, unlinked widgets come last;
- outputs: each inner output not linked inside the group, or linked inside and also outside.

The group instance's ``widgets_values`` then override the inner nodes' own values, and the inner
graph is followed like a subgraph's (node ids ``<group node id>:<index>``).
"""
from __future__ import annotations

import copy
from typing import Any

from execution.workflow import (
    NOTE_TYPES, SEED_NAMES, SUBGRAPH_INPUT_ID, _consume, _Container, _Graph, _is_widget, _Link,
    _Node, _node_error, _spec_inputs, _widget_extras, _WidgetSlot,
)


def expand_group_node(converter: Any, node: _Node, name: str, definition: dict[str, Any]) -> _Container:
    label = f"group node '{name}'"
    inner_raw = list(definition.get("nodes") or [])
    links_to: dict[tuple[int, int], tuple[int, int, Any]] = {}
    links_from: set[tuple[int, int]] = set()
    for raw_link in definition.get("links") or []:
        if raw_link is None or raw_link[0] is None:
            continue
        source, source_slot, target, target_slot = (int(v) for v in raw_link[:4])
        link_type = raw_link[5] if len(raw_link) > 5 else None
        links_to[(target, target_slot)] = (source, source_slot, link_type)
        links_from.add((source, source_slot))
    external = {(int(e[0]), int(e[1])) for e in definition.get("external") or []}

    widgets: list[tuple[int, _WidgetSlot]] = []
    input_map: dict[tuple[int, int], int] = {}
    outputs: list[tuple[str, int] | None] = []
    deferred: list[tuple[int, int, list[tuple[int, str, _WidgetSlot]]]] = []

    def output_visible(index: int, slot: int) -> bool:
        return (index, slot) not in links_from or (index, slot) in external

    for index, raw in enumerate(inner_raw):
        inner_type = str(raw.get("type"))
        if inner_type == "PrimitiveNode":
            targets = [(t, s, lt) for (t, s), (src, _, lt) in links_to.items() if src == index]
            if not targets:
                continue  # an unlinked primitive is left out of the group
            link_type = targets[0][2]
            # the group gives a linked primitive's value a control widget (a number or a combo)
            extras = {"INT": ("control",), "FLOAT": ("control",), "COMBO": ("control", "filter")}
            widgets.append((index, _WidgetSlot("value", None, extras.get(link_type, ()))))
            if output_visible(index, 0):
                outputs.append((str(index), 0))
            continue
        if inner_type == "Reroute":
            if (index, 0) in links_to and (index, 0) in links_from and (index, 0) not in external:
                continue  # used only inside the group
            if (index, 0) not in links_to:
                input_map[(index, 0)] = len(input_map)
            if output_visible(index, 0):
                outputs.append((str(index), 0))
            continue
        if inner_type in NOTE_TYPES:
            continue
        cls = converter.registry.get(inner_type)
        if cls is None:
            raise _node_error(node, f"unknown node type '{inner_type}' inside {label}",
                              "install the node pack that provides it, or ungroup and remove the node")
        raw_inputs = raw.get("inputs") or []
        slots: list[str] = []
        converted: list[tuple[int, str, _WidgetSlot]] = []
        for input_name, input_type, options in _spec_inputs(cls):
            if not _is_widget(input_type):
                slots.append(input_name)
                continue
            extras = _widget_extras(input_name, input_type, options)
            if input_name in SEED_NAMES and "control" not in extras:  # the group adds one for any seed
                extras = ("control",) + extras
            widget = _WidgetSlot(input_name, options.get("default"), extras)
            position = next((i for i, raw_input in enumerate(raw_inputs)
                             if raw_input.get("name") == input_name
                             and (raw_input.get("widget") or {}).get("name") == input_name), -1)
            if position >= 0:
                converted.append((position, input_name, widget))
            else:
                widgets.append((index, widget))
        for slot in range(len(slots)):
            if (index, slot) not in links_to:
                input_map[(index, slot)] = len(input_map)
        deferred.append((index, len(slots), sorted(converted, key=lambda c: c[0])))
        for slot in range(len(getattr(cls, "RETURN_TYPES", ()) or ())):
            if output_visible(index, slot):
                outputs.append((str(index), slot))

    for index, slot_count, converted in deferred:
        for k, (_, input_name, widget) in enumerate(converted):
            if (index, slot_count + k) in links_to:
                continue
            widgets.append((index, widget))
            input_map[(index, slot_count + k)] = len(input_map)

    # the inner graph, with links numbered here: internal ones and ones from the group's inputs
    nodes: dict[str, dict[str, Any]] = {}
    links: dict[Any, _Link] = {}
    for index, raw in enumerate(inner_raw):
        patched = copy.deepcopy(raw)
        patched["id"] = index
        raw_inputs = patched.setdefault("inputs", [])
        wanted = max([s + 1 for (i, s) in list(links_to) + list(input_map) if i == index], default=0)
        while len(raw_inputs) < wanted:
            raw_inputs.append({"name": f"input_{len(raw_inputs)}", "type": "*", "link": None})
        for slot, raw_input in enumerate(raw_inputs):
            raw_input["link"] = None
            if (index, slot) in links_to:
                source, source_slot, link_type = links_to[(index, slot)]
                links[("in", index, slot)] = _Link(str(source), source_slot, str(index), slot, link_type)
                raw_input["link"] = ("in", index, slot)
            elif (index, slot) in input_map:
                links[("ext", index, slot)] = _Link(SUBGRAPH_INPUT_ID, input_map[(index, slot)], str(index),
                                                    slot, raw_input.get("type"))
                raw_input["link"] = ("ext", index, slot)
        nodes[str(index)] = patched
    container = _Container(_Graph(label, nodes, links), outputs, is_group=True)

    values = node.raw.get("widgets_values")
    if isinstance(values, list) and widgets:
        mapped = _consume(values, [widget for _, widget in widgets])
        if mapped is None:
            raise _node_error(node, f"widget count mismatch: {len(values)} widgets_values for the "
                                    f"{len(widgets)} widgets of the group node",
                              "the group definition and the node disagree; re-save the workflow in the "
                              "editor")
        for (index, widget), (_, value) in zip(widgets, mapped):  # group widgets are never soft: one each
            if str(inner_raw[index].get("type")) == "PrimitiveNode":
                primitive = nodes[str(index)]
                primitive["widgets_values"] = [value] + list(primitive.get("widgets_values") or [])[1:]
            else:
                container.widget_overrides.setdefault(str(index), {})[widget.name] = value
    return container

