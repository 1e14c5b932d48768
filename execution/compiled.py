"""Prompt nodes read once per run into :class:`CompiledNode`, and their cache keys.

Compiling splits a node's inputs into links and (coerced) constants so that the scheduler and the
key builder never re-parse the prompt. A node that cannot be compiled (unknown class, a constant
of the wrong type) keeps the reason in ``problem``; it fails only if the run needs it.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from execution.caching import canonical, digest, is_changed_token
from execution.loop import run_blocking
from execution.protocol import is_link
from execution.specs import ClassSpec, CoercionError, SpecCache, coerce_constant, inputs_for

log = logging.getLogger(__name__)


class CompiledNode:
    __slots__ = (
        "class_type",
        "constants",
        "display_id",
        "id",
        "lazy",
        "links",
        "parent_id",
        "problem",
        "raw_links",
        "real_id",
        "spec",
    )

    def __init__(self, node_id: str, class_type: str):
        self.id = node_id
        self.class_type = class_type
        self.spec: ClassSpec | None = None
        self.constants: dict[str, Any] = {}
        self.links: dict[str, tuple[str, int]] = {}   # input name -> (source id, output index)
        # rawLink inputs that are links: passed as the raw [id, index] (in constants), yet their sources
        # are part of the cache key, as in ComfyUI (a loop-closing node is keyed by what opens the loop)
        self.raw_links: dict[str, tuple[str, int]] = {}
        self.lazy: frozenset[str] = frozenset()        # linked inputs evaluated only on request
        self.problem: str | None = None
        self.display_id = node_id
        self.parent_id: str | None = None
        self.real_id = node_id

    def key_sources(self) -> list[tuple[str, int]]:
        """The (source, output) pairs whose keys this node's cache key is built from."""
        return [*self.links.values(), *self.raw_links.values()] if self.raw_links else list(self.links.values())


def compile_node(node_id: str, node: dict[str, Any], specs: SpecCache) -> CompiledNode:
    class_type = node.get("class_type") if isinstance(node, dict) else None
    compiled = CompiledNode(node_id, class_type if isinstance(class_type, str) else "")
    if not isinstance(node, dict) or not isinstance(class_type, str):
        compiled.problem = f"node #{node_id} has no class_type"
        return compiled
    try:
        spec = specs.get(class_type)
    except Exception as exc:  # noqa: BLE001 - plugin INPUT_TYPES may raise anything
        compiled.problem = f"{class_type}.INPUT_TYPES() raised {type(exc).__name__}: {exc}"
        return compiled
    if spec is None:
        compiled.problem = f"node class {class_type!r} is not installed"
        return compiled
    compiled.spec = spec
    inputs = node.get("inputs") or {}
    if not isinstance(inputs, dict):
        compiled.problem = f"its 'inputs' is a {type(inputs).__name__}, not an object"
        return compiled
    declared = inputs_for(spec, inputs)
    lazy = []
    for name, value in inputs.items():
        input_spec = declared.get(name)
        if type(value) is list and (input_spec is None or not input_spec.options.get("rawLink")):
            if not is_link(value):
                compiled.problem = f"input '{name}' is a bad link {value!r}"
                continue
            compiled.links[name] = (value[0], value[1])
            if input_spec is not None and input_spec.is_lazy:
                lazy.append(name)
        elif input_spec is not None and is_link(value):     # a rawLink input: the link itself, as is
            compiled.raw_links[name] = (value[0], value[1])
            compiled.constants[name] = value
        elif input_spec is not None:
            try:
                compiled.constants[name] = coerce_constant(input_spec, value)
            except CoercionError as exc:
                compiled.problem = f"input '{name}': {exc}"
        elif spec.hidden.get(name) not in (None, *HIDDEN_KINDS):
            compiled.constants[name] = value   # a hidden input of the node's own kind: the prompt's value, as is
    for name, input_spec in declared.items():
        if input_spec.is_required and name not in inputs:
            compiled.problem = f"required input '{name}' is missing"
    compiled.lazy = frozenset(lazy)
    if "override_display_id" in node:
        compiled.display_id = node["override_display_id"]
    return compiled


# The hidden kinds the engine fills in; a hidden input of any other kind (``("*",)``, a pack's own) gets
# what the prompt gives it (a constant or a link, as ComfyUI does), or nothing.
HIDDEN_KINDS = frozenset({"PROMPT", "UNIQUE_ID", "EXTRA_PNGINFO", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG",
                          "API_KEY_COMFY_ORG"})


def hidden_value(kind: str, node_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                 dynamic: Any) -> Any:
    if kind == "PROMPT":
        return prompt
    if kind == "UNIQUE_ID":
        return node_id
    if kind == "EXTRA_PNGINFO":
        return extra_data.get("extra_pnginfo")
    if kind == "DYNPROMPT":
        return dynamic
    if kind == "AUTH_TOKEN_COMFY_ORG":
        return extra_data.get("auth_token_comfy_org")
    if kind == "API_KEY_COMFY_ORG":
        return extra_data.get("api_key_comfy_org")
    return None


def snapshot_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A copy of a node's inputs that later edits of the caller's prompt cannot reach."""
    return {name: list(value) if type(value) is list else
            (copy.deepcopy(value) if isinstance(value, (dict, set)) else value)
            for name, value in inputs.items()}


class CompileMemo:
    """The last prompt's compiled nodes and keys, so that a re-submitted graph is compiled and
    keyed only where it changed: an unchanged node whose sources kept their keys keeps its key."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[dict[str, Any], CompiledNode]] = {}
        self.keys: dict[str, bytes | None] = {}

    def clear(self) -> None:
        self.nodes.clear()
        self.keys.clear()


class KeyBuilder:
    """Cache keys for compiled nodes, bottom-up, memoised for the run (and across runs by content)."""

    def __init__(self, nodes: dict[str, CompiledNode], hidden: Callable[[str, str], Any],
                 previous_keys: dict[str, bytes | None] | None = None):
        self.nodes = nodes
        self.keys: dict[str, bytes | None] = {}
        self.hidden = hidden
        self.previous_keys = previous_keys or {}
        self.reused: set[str] = set()

    def key_of(self, root: str) -> bytes | None:
        keys = self.keys
        if root in keys:
            return keys[root]
        nodes = self.nodes
        compiled = nodes.get(root)
        if compiled is not None and all(source in keys for source, _ in compiled.key_sources()):
            key = keys[root] = self._key(compiled)  # the usual case: sources come first in the prompt
            return key
        opened: set[str] = set()
        stack = [root]
        while stack:
            node_id = stack[-1]
            if node_id in keys:
                stack.pop()
                continue
            compiled = nodes.get(node_id)
            if compiled is None:
                keys[node_id] = None
                stack.pop()
                continue
            if node_id not in opened:
                opened.add(node_id)
                pushed = False
                for source, _ in compiled.key_sources():
                    if source not in keys and source not in opened:
                        stack.append(source)
                        pushed = True
                if pushed:
                    continue
            keys[node_id] = self._key(compiled)  # a source still open here is a cycle: no key
            stack.pop()
        return keys[root]

    def _key(self, node: CompiledNode) -> bytes | None:
        spec = node.spec
        if spec is None or node.problem is not None or spec.is_volatile:
            return None
        keys = self.keys
        if node.id in self.reused and spec.is_changed is None and node.id in self.previous_keys:
            previous = self.previous_keys
            if all(keys.get(source) is previous.get(source) for source, _ in node.key_sources()):
                return previous[node.id]
        constants = canonical(node.constants) if node.constants else "{}"
        if constants is None:
            return None
        parts = [node.class_type, constants]
        if spec.is_changed is not None:
            token = self._is_changed(node, spec)
            if token is None:
                return None
            parts.append(token)
        if spec.has_unique_id:
            parts.append("#" + node.id)
        for name in sorted(node.links) if len(node.links) > 1 else node.links:
            source, index = node.links[name]
            key = keys.get(source)
            if key is None:
                return None
            parts.append(f"{name}={key.hex()}:{index}")
        for name in sorted(node.raw_links):
            source, index = node.raw_links[name]
            key = keys.get(source)
            if key is None:
                return None
            parts.append(f"raw:{name}={key.hex()}:{index}")
        return digest(parts)

    def _is_changed(self, node: CompiledNode, spec: ClassSpec) -> str | None:
        """``IS_CHANGED`` called with the node's constants; NaN or an exception means 'always run'."""
        wanted, takes_all = spec.is_changed_args, spec.is_changed_has_kwargs
        arguments = {n: v for n, v in node.constants.items() if takes_all or n in wanted}
        for name, kind in ({} if spec.is_hidden_from_context else spec.hidden).items():
            if kind in HIDDEN_KINDS and (takes_all or name in wanted):
                arguments[name] = self.hidden(kind, node.id)
        for name in node.links:
            if name in wanted and name not in arguments:
                arguments[name] = None
        try:
            return is_changed_token(run_blocking(spec.is_changed(**arguments)))
        except Exception as exc:  # noqa: BLE001 - as in ComfyUI: a failing IS_CHANGED means 'always run'
            log.warning("%s #%s: IS_CHANGED raised %s: %s; the node will run", node.class_type, node.id,
                        type(exc).__name__, exc)
            return None
