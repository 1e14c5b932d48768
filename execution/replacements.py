"""Node replacements: old class names ComfyUI renamed or merged, rewritten to their successors so an
old workflow still runs.

ComfyUI (after 0.3.64) registers these in ``comfy_extras/nodes_replacements.py`` and lets the editor
swap the nodes on load (``GET /api/node_replacements``). Plexus applies the same table on the server,
to API prompts (`replace_in_prompt`) and to saved editor workflows before conversion
(`replace_in_workflow`), so that `main.py run`, POST /prompt and older editors all get it. A
replacement applies only when the registry lacks the old class and has the new one (a plugin that
still provides the old class keeps it). The table's source is ComfyUI's public nodes_replacements.py
(found with the search tool); each entry renames the class, maps ``old_id`` inputs to ``new_id``
(dotted ids address sub-inputs such as ``resize_type.multiplier``), and ``set_value`` fixes an input.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Container, Iterator


@dataclass(frozen=True)
class NodeReplacement:
    new_node_id: str
    old_node_id: str
    old_widget_ids: tuple[str, ...] = ()            # the old node's widgets, in widgets_values order
    input_mapping: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def renamed(self) -> dict[str, str]:
        return {m["old_id"]: m["new_id"] for m in self.input_mapping if "old_id" in m}

    def fixed(self) -> dict[str, Any]:
        return {m["new_id"]: m["set_value"] for m in self.input_mapping if "set_value" in m}

    def as_json(self) -> dict[str, Any]:
        return {"new_node_id": self.new_node_id, "old_node_id": self.old_node_id,
                "old_widget_ids": list(self.old_widget_ids) or None,
                "input_mapping": [dict(m) for m in self.input_mapping] or None}


CORE_REPLACEMENTS: tuple[NodeReplacement, ...] = (
    NodeReplacement("ImageScaleToMaxDimension", "ResizeImagesByLongerEdge", ("longer_edge",), (
        {"new_id": "image", "old_id": "images"}, {"new_id": "largest_size", "old_id": "longer_edge"},
        {"new_id": "upscale_method", "set_value": "lanczos"})),
    NodeReplacement("BatchImagesNode", "ImageBatch", (), (
        {"new_id": "images.image0", "old_id": "image1"}, {"new_id": "images.image1", "old_id": "image2"})),
    NodeReplacement("ResizeImageMaskNode", "ImageScaleBy", ("upscale_method", "scale_by"), (
        {"new_id": "input", "old_id": "image"}, {"new_id": "resize_type", "set_value": "scale by multiplier"},
        {"new_id": "resize_type.multiplier", "old_id": "scale_by"},
        {"new_id": "scale_method", "old_id": "upscale_method"})),
    NodeReplacement("ControlNetLoader", "T2IAdapterLoader", (), (
        {"new_id": "control_net_name", "old_id": "t2i_adapter_name"},)),
    NodeReplacement("Load3D", "Load3DAnimation"),
    NodeReplacement("Preview3D", "Preview3DAnimation"),
    NodeReplacement("SVD_img2vid_Conditioning", "SDV_img2vid_Conditioning"),
    NodeReplacement("ConditioningAverage", "ConditioningAverage "),
)


def active(registry: Container[str],
           table: tuple[NodeReplacement, ...] = CORE_REPLACEMENTS) -> dict[str, NodeReplacement]:
    """{old class: replacement} for the entries that apply with this registry."""
    return {r.old_node_id: r for r in table if r.old_node_id not in registry and r.new_node_id in registry}


def replace_in_prompt(prompt: Any, registry: Container[str],
                      table: tuple[NodeReplacement, ...] = CORE_REPLACEMENTS) -> Any:
    """An API prompt with replaced classes rewritten (a copy; the input is returned as is when
    nothing applies or it is not a prompt)."""
    if not isinstance(prompt, dict):
        return prompt
    replacements = active(registry, table)
    if not any(isinstance(n, dict) and n.get("class_type") in replacements for n in prompt.values()):
        return prompt
    out = {}
    for node_id, node in prompt.items():
        replacement = replacements.get(node.get("class_type")) if isinstance(node, dict) else None
        if replacement is None:
            out[node_id] = node
            continue
        renamed = replacement.renamed()
        inputs = {renamed.get(name, name): value for name, value in (node.get("inputs") or {}).items()}
        inputs.update(replacement.fixed())
        out[node_id] = {**node, "class_type": replacement.new_node_id, "inputs": inputs}
    return out


def _graphs(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield workflow
    for definition in (workflow.get("definitions") or {}).get("subgraphs") or []:
        if isinstance(definition, dict):
            yield from _graphs(definition)


def replace_in_workflow(workflow: Any, registry: Container[str],
                        table: tuple[NodeReplacement, ...] = CORE_REPLACEMENTS) -> Any:
    """A saved editor workflow with replaced node types rewritten (a copy when anything applies).
    The old widgets' values become a name-keyed ``widgets_values`` object under the new ids."""
    if not isinstance(workflow, dict):
        return workflow
    replacements = active(registry, table)
    if not any(isinstance(n, dict) and n.get("type") in replacements
               for graph in _graphs(workflow) for n in graph.get("nodes") or []):
        return workflow
    workflow = copy.deepcopy(workflow)
    for graph in _graphs(workflow):
        for node in graph.get("nodes") or []:
            replacement = replacements.get(node.get("type")) if isinstance(node, dict) else None
            if replacement is None:
                continue
            renamed = replacement.renamed()
            node["type"] = replacement.new_node_id
            for socket in node.get("inputs") or []:
                if isinstance(socket, dict) and socket.get("name") in renamed:
                    socket["name"] = renamed[socket["name"]]
                    if isinstance(socket.get("widget"), dict):
                        socket["widget"]["name"] = socket["name"]
            values = node.get("widgets_values")
            if replacement.old_widget_ids and isinstance(values, list):
                named = dict(zip(replacement.old_widget_ids, values))
                node["widgets_values"] = {**{renamed.get(k, k): v for k, v in named.items()},
                                          **replacement.fixed()}
    return workflow
