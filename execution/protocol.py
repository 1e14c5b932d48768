"""Everything a node author may touch: the node-facing side of the executor (stdlib only).

Nodes follow ComfyUI's classic protocol (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION`` ...). From
here they may use:

- :class:`ExecutionBlocker` -- return it (or put it in an output slot) to stop the branch below
  without an error;
- :class:`GraphBuilder` -- build a subgraph to return as ``{"result": ..., "expand": g.finalize()}``;
- :func:`current_context` -- the running node's :class:`NodeContext` (progress, interruption);
- :class:`Preview` -- an already-encoded preview image to send with progress;
- :data:`PREVIEW_METHODS` -- the latent preview methods; ``NodeContext.preview_method`` is the one this
  prompt asked for (a sampler makes step previews only when it is not ``"none"``);
- :data:`ANY` and :func:`types_compatible` -- the socket-type rules the validator applies;
- :class:`NodeResult`, :func:`read_result` and :func:`node_result` -- what a node's FUNCTION returned
  (a tuple of outputs, an ExecutionBlocker, or the ``{"result", "ui", "expand"}`` dict) read and written
  the one way the engine reads it (V3 nodes' ``NodeOutput`` is converted through them);
- :func:`run_blocking` -- the result of a coroutine, from sync code (the plugin loader awaits V3 packs'
  ``comfy_entrypoint`` with it).
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from execution.errors import Interrupted
from execution.loop import run_blocking  # noqa: F401 - node-facing: await a coroutine from sync code

ANY = "*"


def types_compatible(output_type: Any, input_type: Any) -> bool:
    """Whether an output socket of ``output_type`` may feed an input socket of ``input_type``.

    Equal types match; ``*`` matches anything; comma-separated unions match when they share a
    member; a combo input (a list of options, or ``"COMBO"``) takes a ``COMBO`` or list output.
    """
    if output_type == input_type:
        return True
    if output_type == ANY or input_type == ANY:
        return True
    input_is_combo = isinstance(input_type, (list, tuple)) or input_type == "COMBO"
    if input_is_combo:
        return isinstance(output_type, (list, tuple)) or output_type == "COMBO"
    if not isinstance(output_type, str) or not isinstance(input_type, str):
        return False
    produced = {part.strip() for part in output_type.split(",")}
    accepted = {part.strip() for part in input_type.split(",")}
    return ANY in produced or ANY in accepted or bool(produced & accepted)


def is_link(value: Any) -> bool:
    """A prompt input that refers to another node's output: ``[node_id, output_index]``."""
    return (type(value) is list and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


class ExecutionBlocker:
    """Returned by a node (or placed in one of its output slots): nodes fed by it do not run.

    With ``message=None`` the branch stops silently; with a message, the first node it blocks is
    reported as an ``execution_error`` event and the branch below stops silently.
    """

    __slots__ = ("message",)

    def __init__(self, message: str | None):
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"



@dataclass(frozen=True)
class NodeResult:
    """One call's return value as the engine reads it: ``result`` (the outputs tuple, or an ExecutionBlocker
    that blocks every output), the ``ui`` dict for the editor, and an ``expand`` subgraph."""
    result: Any = ()
    ui: dict[str, Any] | None = None
    expand: dict[str, Any] | None = None


def read_result(returned: Any) -> NodeResult:
    """A classic FUNCTION's return value: a ``{"result", "ui", "expand"}`` dict (as in ComfyUI; a ``ui`` that
    is not a dict is ignored) or the outputs themselves."""
    if isinstance(returned, dict):
        ui = returned.get("ui")
        return NodeResult(returned.get("result", ()), ui if isinstance(ui, dict) else None, returned.get("expand"))
    return NodeResult(returned)


def node_result(result: Any = (), ui: dict[str, Any] | None = None, expand: dict[str, Any] | None = None) -> dict:
    """The classic result dict for ``result`` (+ ``ui`` / ``expand`` when given), which :func:`read_result`
    reads back."""
    out: dict[str, Any] = {"result": result}
    if ui is not None:
        out["ui"] = ui
    if expand is not None:
        out["expand"] = expand
    return out

@dataclass(frozen=True)
class Preview:
    """A preview image for the progress bar: already-encoded bytes (execution never touches pixels)."""

    image_format: str  # "JPEG" | "PNG"
    data: bytes
    max_size: int | None = None


# ComfyUI's latent preview methods (its --preview-method; the editor's "Live preview method" setting
# sends one as extra_data["preview_method"], "default" meaning the server's own).
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


def resolve_preview_method(asked: Any, server_default: str) -> str:
    """The preview method of one prompt: the one its ``extra_data["preview_method"]`` names, else (absent,
    ``"default"`` or unknown) the server's."""
    return asked if isinstance(asked, str) and asked in PREVIEW_METHODS else server_default


class NodeContext:
    """What the executor offers the node that is running now (see :func:`current_context`)."""

    __slots__ = ("_hidden", "_interrupted", "_report", "class_type", "display_node_id", "node_id", "preview_method",
                 "prompt_id")

    def __init__(self, prompt_id: str, node_id: str, class_type: str, display_node_id: str,
                 report: Callable[[str, float, float, Preview | None], None],
                 interrupted: Callable[[], bool], preview_method: str = "none",
                 hidden: Callable[[str], Any] | None = None):
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.class_type = class_type
        self.display_node_id = display_node_id
        self.preview_method = preview_method
        self._report = report
        self._interrupted = interrupted
        self._hidden = hidden

    def hidden(self, kind: str) -> Any:
        """The value of a hidden input kind (``PROMPT``, ``UNIQUE_ID``, ``EXTRA_PNGINFO``, ``DYNPROMPT``, ...)
        for this node, None for a kind the engine does not know. Nodes whose class sets
        ``HIDDEN_FROM_CONTEXT = True`` (V3 schema nodes) read their hidden inputs here instead of receiving
        them as keyword arguments."""
        return self._hidden(kind) if self._hidden is not None else None

    def report_progress(self, value: float, max: float, preview: Preview | None = None) -> None:
        """Send ``progress`` (and a ``preview`` when given) for this node; raises if interrupted."""
        self.check_interrupted()
        self._report(self.node_id, value, max, preview)

    @property
    def is_interrupted(self) -> bool:
        return self._interrupted()

    def check_interrupted(self) -> None:
        """Raise :class:`~execution.errors.Interrupted` when the user asked to stop this prompt."""
        if self._interrupted():
            raise Interrupted()


_CONTEXT: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("plexus_node_context",
                                                                              default=None)


def current_context() -> NodeContext | None:
    """The context of the node running in this thread / task, or None outside node execution."""
    return _CONTEXT.get()


def _enter_context(context: NodeContext | None) -> contextvars.Token:
    """Executor-only: make ``context`` current; pass the token to :func:`_leave_context`."""
    return _CONTEXT.set(context)


def _leave_context(token: contextvars.Token) -> None:
    _CONTEXT.reset(token)


# -- node expansion --------------------------------------------------------------------------------

# (root, call_index, graph_index): the executor sets root and call index while a node runs, so that
# graphs built by that call get ids no other node can have.
_PREFIX: contextvars.ContextVar[tuple[str, int, int]] = contextvars.ContextVar(
    "plexus_graph_prefix", default=("", 0, 0))


class GraphNode:
    """One node of a :class:`GraphBuilder` graph; ``out(i)`` is a link to its i-th output."""

    __slots__ = ("class_type", "id", "inputs", "override_display_id")

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]):
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, name: str, value: Any) -> None:
        """Set an input; ``None`` removes it."""
        if value is None:
            self.inputs.pop(name, None)
        else:
            self.inputs[name] = value

    def get_input(self, name: str) -> Any:
        return self.inputs.get(name)

    def set_override_display_id(self, display_id: str) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            data["override_display_id"] = self.override_display_id
        return data


class GraphBuilder:
    """Builds the subgraph a node returns as ``{"result": (...), "expand": builder.finalize()}``.

    >>> g = GraphBuilder()
    >>> add = g.node("Add", a=1, b=2)
    >>> result = (add.out(0),)      # the expanding node's output 0 becomes Add's output 0
    """

    def __init__(self, prefix: str | None = None):
        self.prefix = GraphBuilder.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, GraphNode] = {}
        self._next_id = 1

    @classmethod
    def set_default_prefix(cls, root: str, call_index: int, graph_index: int = 0) -> None:
        _PREFIX.set((root, call_index, graph_index))

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        default_root, default_call, default_graph = _PREFIX.get()
        root = default_root if root is None else root
        call_index = default_call if call_index is None else call_index
        graph_index = default_graph if graph_index is None else graph_index
        _PREFIX.set((default_root, default_call, default_graph + 1))
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> GraphNode:
        if id is None:
            id = str(self._next_id)
            self._next_id += 1
        node_id = self.prefix + id
        if node_id not in self.nodes:
            self.nodes[node_id] = GraphNode(node_id, class_type, inputs)
        return self.nodes[node_id]

    def lookup_node(self, id: str) -> GraphNode | None:
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:
        del self.nodes[self.prefix + id]

    def replace_node_output(self, id: str, index: int, new_value: Any) -> None:
        """Point every input linked to output ``index`` of node ``id`` at ``new_value`` (None: unlink)."""
        target = [self.prefix + id, index]
        for node in self.nodes.values():
            for name, value in list(node.inputs.items()):
                if is_link(value) and value == target:
                    node.set_input(name, new_value)

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}
