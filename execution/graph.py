"""The graph of one running prompt: the submitted nodes plus the nodes that expansions add.

:class:`DynamicPrompt` keeps ComfyUI's method names because plugins receive it as the hidden
``DYNPROMPT`` input (loop nodes walk it to copy their body).
"""
from __future__ import annotations

from typing import Any

from execution.errors import PlexusError
from execution.protocol import is_link


class DynamicPrompt:
    def __init__(self, original_prompt: dict[str, Any]):
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Any] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        node = self.ephemeral_prompt.get(node_id) or self.original_prompt.get(node_id)
        if node is None:
            raise PlexusError("node_not_found", f"Node #{node_id} is not in the prompt")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral_prompt

    def add_ephemeral_node(self, node_id: str, node: dict[str, Any], parent_id: str, display_id: str) -> None:
        self.ephemeral_prompt[node_id] = node
        self.ephemeral_parents[node_id] = parent_id
        self.ephemeral_display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_parents:
            node_id = self.ephemeral_parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_display:
            node_id = self.ephemeral_display[node_id]
        return node_id

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> dict[str, Any]:
        return self.original_prompt


def rename_expansion(parent_id: str, call_index: int, graph: dict[str, Any], result: Any,
                     dynamic: DynamicPrompt) -> tuple[dict[str, Any], Any]:
    """Give an expansion's nodes ids no other node has, rewriting the links that name them.

    Ids made by :class:`~execution.protocol.GraphBuilder` while the parent ran already start with
    ``"<parent>."`` and are kept; any other id ``k`` becomes ``"<parent>.<call>.k"``. Links to nodes
    outside the expansion (the parent's own inputs, say) are left alone.
    """
    if not isinstance(graph, dict):
        raise PlexusError("invalid_expansion", f"Node #{parent_id} returned an 'expand' that is not a dict "
                          f"of nodes (got {type(graph).__name__}); return GraphBuilder.finalize()")
    own_prefix = f"{parent_id}."
    renamed = {old: old if old.startswith(own_prefix) else f"{own_prefix}{call_index}.{old}" for old in graph}
    if len(set(renamed.values())) != len(renamed):
        raise PlexusError("invalid_expansion", f"Node #{parent_id} expanded into nodes with clashing ids")

    def relink(value: Any) -> Any:
        if is_link(value) and value[0] in renamed:
            return [renamed[value[0]], value[1]]
        return value

    new_graph: dict[str, Any] = {}
    for old, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise PlexusError("invalid_expansion", f"Node #{parent_id} expanded into node {old!r} without "
                              "a class_type")
        new_id = renamed[old]
        if dynamic.has_node(new_id):
            raise PlexusError("invalid_expansion", f"Node #{parent_id} expanded into node #{new_id}, which "
                              "already exists; let GraphBuilder() pick the ids")
        copy = {"class_type": node["class_type"],
                "inputs": {name: relink(v) for name, v in (node.get("inputs") or {}).items()}}
        if "override_display_id" in node:
            copy["override_display_id"] = node["override_display_id"]
        new_graph[new_id] = copy
    if isinstance(result, (list, tuple)) and not is_link(result):
        result = tuple(relink(v) for v in result)
    return new_graph, result
