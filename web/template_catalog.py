"""The official workflow templates against what this Plexus can run.

The templates come from PyPI: ``comfyui-workflow-templates-json`` holds ``templates/index*.json`` and
every workflow ``<name>.json``; thumbnails live in the optional media bundles
(``comfyui-workflow-templates-media-*``, pulled in by the ``comfyui-workflow-templates`` meta package)
and are found through ``comfyui-workflow-templates-core``'s manifest. The older single package
(``comfyui_workflow_templates/templates``, up to 0.1.x) is read the same way when it is installed.

`assess` says, for one index entry and its workflow, which node types this server lacks and which
model families it cannot load; `mark_index` returns the index with every such template marked (title
suffix, a leading sentence in the description, a "Not supported by Plexus" tag) so the template
browser shows it as unsupported instead of hiding it or letting it fail on Run.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterator

# Node types the editor handles itself; a workflow may use them freely.
FRONTEND_ONLY_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)"})
MUTED, BYPASSED = 2, 4

# Index "models" tags -> the checkpoint family Plexus must load for them. Tags not listed here name
# families (or API services) Plexus does not run. Add a tag when its family lands in models/.
FAMILY_OF_TAG = {"SD1.5": "sd1", "SD 1.5": "sd1", "SD1": "sd1", "SD2": "sd2", "SD2.1": "sd2", "SD 2.1": "sd2",
                 "SDXL": "sdxl", "SD3": "sd3", "SD3.5": "sd3", "FLUX.1": "flux", "FLUX.1 Krea": "flux",
                 "FLUX.1 Kontext": "flux"}
SUPPORTED_MODEL_TAGS = frozenset(FAMILY_OF_TAG)
NO_MODEL_TAGS = frozenset({"None", ""})
# Model files (as templates name them) of a supported family whose layout Plexus does not load yet.
# None at present (the SD3.5 large ControlNets in Stability's format, listed here before, load now).
UNSUPPORTED_MODEL_FILES: dict[str, str] = {}
UNSUPPORTED_TAG = "Not supported by Plexus"


def _nodes_of(graph: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (n for n in graph.get("nodes") or [] if isinstance(n, dict))
    for definition in (graph.get("definitions") or {}).get("subgraphs") or []:
        if isinstance(definition, dict):
            yield from _nodes_of(definition)


def subgraph_ids(workflow: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    pending = [workflow]
    while pending:
        graph = pending.pop()
        for definition in (graph.get("definitions") or {}).get("subgraphs") or []:
            if isinstance(definition, dict) and "id" in definition:
                found.add(str(definition["id"]))
                pending.append(definition)
    return found


def workflow_node_types(workflow: dict[str, Any]) -> set[str]:
    """The node classes a saved (editor-format) workflow needs from the server: every active node in
    it and in its subgraphs, without subgraph instances, editor-only nodes, muted or bypassed nodes."""
    if "nodes" not in workflow:   # an API-format prompt
        return {str(n.get("class_type")) for n in workflow.values() if isinstance(n, dict)}
    inner = subgraph_ids(workflow)
    types = set()
    for node in _nodes_of(workflow):
        node_type = str(node.get("type"))
        if node_type in inner or node_type in FRONTEND_ONLY_TYPES or node.get("mode") in (MUTED, BYPASSED):
            continue
        types.add(node_type)
    return types


@dataclass
class TemplateSupport:
    name: str
    missing_types: list[str] = field(default_factory=list)
    unsupported_models: list[str] = field(default_factory=list)
    has_workflow: bool = True

    @property
    def is_supported(self) -> bool:
        return self.has_workflow and not self.missing_types and not self.unsupported_models

    def reason(self) -> str:
        parts = []
        if not self.has_workflow:
            parts.append("its workflow file is not installed")
        if self.unsupported_models:
            parts.append("model (family) not supported: " + ", ".join(self.unsupported_models))
        if self.missing_types:
            parts.append("missing nodes: " + ", ".join(self.missing_types))
        return "; ".join(parts)


def model_file_names(workflow: dict[str, Any]) -> set[str]:
    """The model file names a workflow's nodes list in ``properties.models`` and in their string widgets."""
    names = set()
    for node in _nodes_of(workflow):
        for model in (node.get("properties") or {}).get("models") or []:
            if isinstance(model, dict) and model.get("name"):
                names.add(str(model["name"]))
        values = node.get("widgets_values")
        for value in values if isinstance(values, list) else []:
            if isinstance(value, str) and value.endswith(".safetensors"):
                names.add(value)
    return names


def model_family(entry: dict[str, Any]) -> str | None:
    """The Plexus family ("sd1", "sd2", "sdxl", "sd3", "flux") an index entry's model tags name, or None
    (no model, or only families Plexus does not load; the bare "FLUX" tag also covers FLUX.2 and Chroma)."""
    return next((FAMILY_OF_TAG[str(m)] for m in entry.get("models") or [] if str(m) in FAMILY_OF_TAG), None)


def assess(entry: dict[str, Any], workflow: dict[str, Any] | None, registered: Container[str]) -> TemplateSupport:
    name = str(entry.get("name"))
    if workflow is None:
        return TemplateSupport(name, has_workflow=False)
    missing = sorted(t for t in workflow_node_types(workflow) if t not in registered)
    models = [str(m) for m in entry.get("models") or []]
    unsupported = [m for m in models if m not in SUPPORTED_MODEL_TAGS and m not in NO_MODEL_TAGS]
    if any(m in SUPPORTED_MODEL_TAGS for m in models):
        unsupported = []   # e.g. ["SD1.5", "Stability"]: the family tag decides
    unsupported += sorted({UNSUPPORTED_MODEL_FILES[f] for f in model_file_names(workflow) if f in UNSUPPORTED_MODEL_FILES})
    return TemplateSupport(name, missing, unsupported)


def mark_index(index: list[Any], load_workflow: Callable[[str], dict[str, Any] | None],
               registered: Container[str]) -> list[Any]:
    """A copy of `index` in which each template this server cannot run says so and why."""
    marked = copy.deepcopy(index)
    for category in marked:
        if not isinstance(category, dict):
            continue
        for entry in category.get("templates") or []:
            if not isinstance(entry, dict) or "name" not in entry:
                continue
            support = assess(entry, load_workflow(str(entry["name"])), registered)
            if support.is_supported:
                continue
            entry["title"] = f"{entry.get('title') or entry['name']} (not supported by Plexus)"
            entry["description"] = f"Plexus cannot run this template yet: {support.reason()}. " \
                                   f"{entry.get('description', '')}".rstrip()
            entry["tags"] = [*(entry.get("tags") or []), UNSUPPORTED_TAG]
    return marked


def read_workflow(folder: Path, name: str) -> dict[str, Any] | None:
    """``folder/<name>.json`` as a dict, or None when it is missing, unreadable or not a workflow."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
