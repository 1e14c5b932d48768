"""ComfyUI's ``comfy_execution.graph_utils``: Plexus's own GraphBuilder / ExecutionBlocker / is_link
(execution.protocol), which the executor expands and blocks on like ComfyUI's."""
from execution.protocol import ExecutionBlocker, GraphBuilder, GraphNode, is_link

Node = GraphNode


def add_graph_prefix(graph: dict, outputs: tuple, prefix: str) -> tuple[dict, tuple]:
    """Prefix every node id of an expanded graph (and the links to them)."""
    def relink(value):
        return [prefix + value[0], value[1]] if is_link(value) else value

    new_graph = {prefix + node_id: {**node, "inputs": {k: relink(v) for k, v in node.get("inputs", {}).items()}}
                 for node_id, node in graph.items()}
    return new_graph, tuple(relink(o) for o in outputs)


__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]
