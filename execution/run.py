"""One prompt's execution: scheduling, lazy inputs, expansion, list mapping, caching and events.

The scheduler is demand-driven: for each requested output it walks a stack of nodes; a node whose
inputs are not ready pushes their sources, a node found in the cache is served from it, and a
ready node runs. Lazy inputs join a node's needs when its ``check_lazy_status`` asks for them; an
expanding node waits for the nodes its result links to. Every step is O(inputs), so a prompt costs
O(nodes + links) on top of the node functions themselves.
"""
from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from typing import Any

from execution.caching import CacheEntry
from execution.compiled import (HIDDEN_KINDS, CompiledNode, KeyBuilder, compile_node, hidden_value,
                                snapshot_inputs)
from execution.errors import Interrupted, PlexusError
from execution.failures import NodeFailure, now_ms, summarize
from execution.graph import DynamicPrompt, rename_expansion
from execution.lists import blocker_in, call_arguments, merge_outputs, merge_ui, slot_items
from execution.protocol import (
    _PREFIX,
    ExecutionBlocker,
    NodeContext,
    Preview,
    _enter_context,
    _leave_context,
    is_link,
    read_result,
    resolve_preview_method,
)
from execution.specs import SpecCache
from execution.validation import full_type_name

_NO_INPUTS: dict[str, Any] = {}


class PromptRun:
    def __init__(self, engine: Any, record: Any):
        self.engine = engine
        self.cache = engine.cache
        self.events = engine.events
        self.prompt_id = record.prompt_id
        self.client_id = record.client_id
        self.prompt = record.prompt
        self.extra_data = record.extra_data or {}
        self.preview_method = resolve_preview_method(self.extra_data.get("preview_method"),
                                                     engine.preview_method)
        self.requested_outputs = list(record.outputs_to_execute or [])
        self.has_listeners = self.events.has_subscribers
        self.specs = SpecCache(engine.registry)
        self.dynamic = DynamicPrompt(self.prompt)
        self.nodes: dict[str, CompiledNode] = {}
        self.memo = engine.compile_memo
        self.key_builder = KeyBuilder(self.nodes, self._hidden_for_key, self.memo.keys)
        self.values: dict[str, list[list[Any]]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.timings: dict[str, float] = {}
        self.messages: list[list[Any]] = []
        self.requested_lazy: dict[str, set[str]] = {}
        self.awaiting: dict[str, tuple[list[Any], list[str], dict[str, Any] | None]] = {}
        self.open: set[str] = set()
        self.progressed: set[str] = set()
        self.current: str | None = None
        self.blocked_reported = False

    # -- events ------------------------------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.emit(kind, data, self.client_id)

    def message(self, kind: str, data: dict[str, Any]) -> None:
        """An event that is also kept in the history's status messages."""
        self.messages.append([kind, data])
        self.emit(kind, data)

    def _node_state(self, node: CompiledNode, state: str, value: float, maximum: float) -> dict[str, Any]:
        return {"value": value, "max": maximum, "state": state, "node_id": node.id, "prompt_id": self.prompt_id,
                "display_node_id": node.display_id, "parent_node_id": node.parent_id, "real_node_id": node.real_id}

    def report_progress(self, node_id: str, value: float, maximum: float, preview: Preview | None) -> None:
        node = self.nodes[node_id]
        self.progressed.add(node_id)
        self.emit("progress", {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": node_id})
        self.emit("progress_state", {"prompt_id": self.prompt_id,
                                     "nodes": {node_id: self._node_state(node, "running", value, maximum)}})
        if preview is not None:
            self.emit("preview", {"prompt_id": self.prompt_id, "node_id": node_id,
                                  "display_node_id": node.display_id, "preview": preview})

    def is_interrupted(self) -> bool:
        return self.engine.is_interrupted(self.prompt_id)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.message("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        status, error = "success", None
        try:
            self.compile(self.prompt, parent=None)
            cached = self.cache.present(self.key_builder.keys, self.prompt)
            self.message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": now_ms()})
            outputs = self.requested_outputs or [n for n, c in self.nodes.items() if c.spec and c.spec.is_output]
            for output in outputs:
                self.run_to(output)
            self.message("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        except Interrupted:
            status = "interrupted"
            node = self.nodes.get(self.current or "")
            self.message("execution_interrupted", {
                "prompt_id": self.prompt_id, "node_id": self.current, "node_type": node.class_type if node else None,
                "executed": list(self.executed), "timestamp": now_ms()})
        except NodeFailure as failure:
            status, error = "error", self.error_data(failure)
            self.message("execution_error", error)
        except Exception as exc:  # noqa: BLE001 - an engine bug: report it, keep the worker alive
            status = "error"
            failure = NodeFailure(self.current or "", exc, f"internal engine error: {type(exc).__name__}: {exc}",
                                  traceback.format_tb(exc.__traceback__))
            error = self.error_data(failure)
            self.message("execution_error", error)
        finally:
            self.current = None
            self.emit("executing", {"node": None, "prompt_id": self.prompt_id})
            live = {k for k in self.key_builder.keys.values() if k is not None}
            self.cache.end_prompt(live)
        return {"status": status, "error": error, "outputs": dict(self.ui), "meta": self.meta(),
                "messages": self.messages, "node_timings_s": self.timings}

    def meta(self) -> dict[str, Any]:
        result = {}
        for node_id in self.ui:
            node = self.nodes[node_id]
            result[node_id] = {"node_id": node_id, "display_node": node.display_id,
                               "parent_node": node.parent_id, "real_node_id": node.real_id}
        return result

    def error_data(self, failure: NodeFailure) -> dict[str, Any]:
        node = self.nodes.get(failure.node_id)
        exc = failure.exception
        # as ComfyUI: an expanded node's failure is reported on the node that expanded (its real id)
        return {"prompt_id": self.prompt_id, "node_id": (node.real_id if node else failure.node_id) or None,
                "node_type": node.class_type if node else None, "executed": list(self.executed),
                "exception_message": failure.message, "exception_type": full_type_name(type(exc)),
                "traceback": failure.traceback_lines,
                "current_inputs": {name: [summarize(v) for v in values[:16]]
                                   for name, values in failure.inputs.items()},
                "current_outputs": list(self.values), "timestamp": now_ms()}

    def compile(self, graph: dict[str, Any], parent: CompiledNode | None) -> None:
        memo, registry, reused = self.memo, self.engine.registry, self.key_builder.reused
        fresh: dict[str, tuple[dict[str, Any], CompiledNode]] = {}
        previous_nodes = memo.nodes if parent is None else {}
        get_class = registry.get
        for node_id, node in graph.items():
            previous = previous_nodes.get(node_id)
            if previous is not None:   # unchanged since the last prompt: keep its compiled form
                snapshot, compiled = previous
                if (type(node) is dict and node.get("inputs", _NO_INPUTS) == snapshot
                        and node.get("class_type") == compiled.class_type and "override_display_id" not in node
                        and get_class(compiled.class_type) is compiled.spec.cls):
                    reused.add(node_id)
                    fresh[node_id] = previous
                    self.nodes[node_id] = compiled
                    continue
            compiled = compile_node(node_id, node, self.specs)
            if parent is None and compiled.spec is not None and compiled.problem is None:
                fresh[node_id] = (snapshot_inputs(node.get("inputs") or {}), compiled)
            if parent is not None:
                compiled.parent_id = parent.id
                compiled.real_id = parent.real_id
                if compiled.display_id == node_id:
                    compiled.display_id = parent.display_id
            self.nodes[node_id] = compiled
        self.key_all(graph)
        if parent is None:  # what the next prompt can reuse
            memo.nodes = fresh
            memo.keys = {node_id: self.key_builder.keys[node_id] for node_id in graph}

    def key_all(self, graph: dict[str, Any]) -> None:
        """Keys for ``graph``'s nodes; an unchanged node whose sources kept their keys keeps its key
        (checked inline here: this loop is what a re-submitted prompt costs per unchanged node)."""
        builder = self.key_builder
        keys, previous, reused, nodes, key_of = builder.keys, builder.previous_keys, builder.reused, self.nodes, \
            builder.key_of
        for node_id in graph:
            if node_id in keys:
                continue
            if node_id in reused and node_id in previous:
                compiled = nodes[node_id]
                spec = compiled.spec
                if spec.is_changed is None and not spec.is_volatile:
                    for source, _ in compiled.key_sources():
                        if source not in keys or keys[source] is not previous.get(source):
                            break
                    else:
                        keys[node_id] = previous[node_id]
                        continue
            key_of(node_id)

    def _hidden_for_key(self, kind: str, node_id: str) -> Any:
        return hidden_value(kind, node_id, self.prompt, self.extra_data, self.dynamic)

    def run_to(self, target: str) -> None:
        values, nodes, open_nodes = self.values, self.nodes, self.open
        stack = [target]
        while stack:
            node_id = stack[-1]
            if node_id in values:
                stack.pop()
                continue
            node = nodes.get(node_id)
            if node is None:
                raise NodeFailure(node_id, PlexusError("node_not_found", f"Node #{node_id} is not in the prompt"))
            if node_id not in open_nodes and self.serve_from_cache(node):
                stack.pop()
                continue
            missing = self.missing_sources(node)
            if missing:
                for source in missing:
                    if source in open_nodes:
                        raise NodeFailure(node_id, PlexusError(
                            "dependency_cycle", f"{node.class_type} #{node_id} depends on #{source}, which "
                            f"depends on #{node_id}: a dependency cycle"))
                    if source not in nodes:
                        raise NodeFailure(node_id, PlexusError(
                            "bad_linked_input", f"{node.class_type} #{node_id} links to node #{source}, which "
                            "is not in the prompt"))
                open_nodes.add(node_id)
                stack.extend(reversed(missing))
                continue
            if self.is_interrupted():
                self.current = node_id
                raise Interrupted()
            open_nodes.add(node_id)
            if self.execute(node):
                open_nodes.discard(node_id)
                stack.pop()

    def missing_sources(self, node: CompiledNode) -> list[str]:
        values = self.values
        waiting = self.awaiting.get(node.id)
        if waiting is not None:
            return [s for s in waiting[1] if s not in values]
        if not node.lazy:
            return [source for source, _ in node.links.values() if source not in values]
        requested = self.requested_lazy.get(node.id, ())
        return [source for name, (source, _) in node.links.items()
                if source not in values and (name not in node.lazy or name in requested)]

    def serve_from_cache(self, node: CompiledNode) -> bool:
        entry = self.cache.get(self.key_builder.keys.get(node.id))
        if entry is None:
            return False
        self.values[node.id] = entry.outputs
        self.executed.append(node.id)
        if entry.ui is not None:
            self.ui[node.id] = entry.ui
            if self.has_listeners:
                self.emit("executed", {"node": node.id, "display_node": node.display_id, "output": entry.ui,
                                       "prompt_id": self.prompt_id})
        return True

    # -- one node ------------------------------------------------------------------------------------

    def gather(self, node: CompiledNode) -> dict[str, list[Any]]:
        arguments = {name: [value] for name, value in node.constants.items()}
        values = self.values
        for name, (source, index) in node.links.items():
            outputs = values.get(source)
            if outputs is None:
                arguments[name] = [None]  # a lazy input nobody asked for (yet)
            elif index >= len(outputs):
                source_type = self.nodes[source].class_type
                raise NodeFailure(node.id, PlexusError(
                    "bad_linked_input", f"{node.class_type} #{node.id} input '{name}' links to output {index} of "
                    f"{source_type} #{source}, which has {len(outputs)} output(s)"))
            else:
                arguments[name] = outputs[index]
        if not node.spec.is_hidden_from_context:
            for name, kind in node.spec.hidden.items():
                if kind in HIDDEN_KINDS:
                    arguments[name] = [hidden_value(kind, node.id, self.prompt, self.extra_data, self.dynamic)]
        return arguments

    def instance(self, node: CompiledNode) -> Any:
        instances = self.engine.instances
        key = (node.id, node.class_type)
        obj = instances.get(key)
        if obj is None:
            obj = instances[key] = node.spec.cls()
        return obj

    def execute(self, node: CompiledNode) -> bool:
        """Run ``node``; True when its outputs are in ``values``, False when it waits for more inputs."""
        self.current = node.id
        spec = node.spec
        if spec is None or node.problem is not None:
            raise NodeFailure(node.id, PlexusError("invalid_node", f"{node.class_type or '?'} #{node.id} cannot "
                                                   f"run: {node.problem}"))
        if node.id in self.awaiting:
            return self.finish_expansion(node)
        arguments = self.gather(node)
        started = time.perf_counter()
        try:
            obj = self.instance(node)
            if node.lazy and self.needs_lazy(node, obj, arguments):
                return False
            if spec.is_async:
                companions = self.ready_async_nodes(exclude=node.id)
                if companions:
                    return self.execute_together(node, obj, arguments, companions, started)
            if self.has_listeners:
                self.emit("executing", {"node": node.id, "display_node": node.display_id, "prompt_id": self.prompt_id})
                self.emit("progress_state", {"prompt_id": self.prompt_id,
                                             "nodes": {node.id: self._node_state(node, "running", 0, 1)}})
            results = self.call(node, obj, spec.function, arguments)
        except (Interrupted, NodeFailure):
            raise
        except Exception as exc:
            raise NodeFailure(node.id, exc, f"{node.class_type} #{node.id}: {type(exc).__name__}: {exc}",
                              traceback.format_tb(exc.__traceback__), arguments) from exc
        done = self.take_results(node, results, arguments)
        self.timings[node.id] = self.timings.get(node.id, 0.0) + time.perf_counter() - started
        return done

    def call(self, node: CompiledNode, obj: Any, function: str, arguments: dict[str, list[Any]],
             wait: bool = True) -> list[Any]:
        """Call ``function`` once per list index (ComfyUI's mapping), inside the node's context. With
        ``wait=False`` an async node's calls come back as started tasks."""
        spec = node.spec
        method = getattr(obj, function)
        is_async = spec.is_async if function == spec.function else inspect.iscoroutinefunction(method)
        is_input_list = spec.is_input_list
        context = NodeContext(self.prompt_id, node.id, node.class_type, node.display_id, self.report_progress,
                              self.is_interrupted, self.preview_method,
                              lambda kind: hidden_value(kind, node.id, self.prompt, self.extra_data, self.dynamic))
        token = _enter_context(context)
        prefix_token = _PREFIX.set((node.id, 0, 0))
        try:
            results: list[Any] = []
            for index, kwargs in enumerate(call_arguments(arguments, is_input_list)):
                if index:
                    context.check_interrupted()
                    _PREFIX.set((node.id, index, 0))
                blocker = blocker_in(kwargs, is_input_list)
                if blocker is not None:
                    results.append(self.blocked(node, blocker))
                elif is_async:
                    results.append(_prefixed(method, kwargs, node.id, index))
                else:
                    results.append(method(**kwargs))
            if is_async:
                pending = [(i, r) for i, r in enumerate(results) if inspect.isawaitable(r)]
                if not wait:   # tasks made inside this node's context; the caller waits for them
                    for i, awaitable in pending:
                        results[i] = self.engine.loop.start(awaitable)
                    return results
                for (i, _), value in zip(pending, self.engine.loop.gather([r for _, r in pending])):
                    results[i] = value
            return results
        finally:
            _PREFIX.reset(prefix_token)
            _leave_context(token)

    # -- async nodes side by side -------------------------------------------------------------------

    def needed_nodes(self) -> set[str]:
        """Nodes some requested output (or a pending expansion) still needs, through links that will be
        evaluated (lazy inputs only once asked for); the search stops at nodes that have run."""
        values, nodes = self.values, self.nodes
        roots = list(self.requested_outputs or [n for n, c in nodes.items() if c.spec and c.spec.is_output])
        for _, waiting, _ in self.awaiting.values():
            roots += waiting
        needed: set[str] = set()
        stack = [r for r in roots if r not in values]
        while stack:
            node_id = stack.pop()
            if node_id in needed or node_id in values:
                continue
            needed.add(node_id)
            node = nodes.get(node_id)
            if node is None:
                continue
            requested = self.requested_lazy.get(node_id, ())
            stack += [source for name, (source, _) in node.links.items()
                      if name not in node.lazy or name in requested]
        return needed

    def ready_async_nodes(self, exclude: str) -> list[CompiledNode]:
        """Async nodes that are needed and could start now (every input there, no lazy inputs, not cached):
        they run side by side with the async node about to run, as ComfyUI overlaps them."""
        values, nodes, found = self.values, self.nodes, []
        for node_id in sorted(self.needed_nodes()):
            node = nodes.get(node_id)
            if (node_id == exclude or node is None or node.spec is None or not node.spec.is_async
                    or node.problem is not None or node.lazy or node_id in self.open or node_id in self.awaiting
                    or any(source not in values for source, _ in node.links.values())
                    or self.key_builder.keys.get(node_id) in self.cache):
                continue
            found.append(node)
        return found

    def execute_together(self, node: CompiledNode, obj: Any, arguments: dict[str, list[Any]],
                         companions: list[CompiledNode], started: float) -> bool:
        """Start ``node`` and the ready async ``companions``, wait for all, then take their results in order
        (the first failure, ``node``'s first, is the one reported)."""
        batch = [(node, obj, arguments)] + [(c, self.instance(c), self.gather(c)) for c in companions]
        running = []
        for member, member_obj, member_arguments in batch:
            if self.has_listeners:
                self.emit("executing", {"node": member.id, "display_node": member.display_id,
                                        "prompt_id": self.prompt_id})
                self.emit("progress_state", {"prompt_id": self.prompt_id,
                                             "nodes": {member.id: self._node_state(member, "running", 0, 1)}})
            running.append(self.call(member, member_obj, member.spec.function, member_arguments, wait=False))
        tasks = [r for results in running for r in results if isinstance(r, asyncio.Task)]
        if tasks:
            self.engine.loop.run(asyncio.wait(tasks))
        done = True
        for (member, _, member_arguments), results in zip(batch, running):
            self.current = member.id
            try:
                values = [r.result() if isinstance(r, asyncio.Task) else r for r in results]
            except (Interrupted, NodeFailure):
                raise
            except Exception as exc:
                raise NodeFailure(member.id, exc, f"{member.class_type} #{member.id}: {type(exc).__name__}: {exc}",
                                  traceback.format_tb(exc.__traceback__), member_arguments) from exc
            finished = self.take_results(member, values, member_arguments)
            self.timings[member.id] = self.timings.get(member.id, 0.0) + time.perf_counter() - started
            if member is node:
                done = finished
        self.current = node.id
        return done

    def blocked(self, node: CompiledNode, blocker: ExecutionBlocker) -> ExecutionBlocker:
        if blocker.message is None:
            return blocker
        self.emit("execution_error", {
            "prompt_id": self.prompt_id, "node_id": node.id, "node_type": node.class_type,
            "executed": list(self.executed), "exception_message": f"Execution Blocked: {blocker.message}",
            "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": [], "current_outputs": [],
            "timestamp": now_ms()})
        return ExecutionBlocker(None)

    def needs_lazy(self, node: CompiledNode, obj: Any, arguments: dict[str, list[Any]]) -> bool:
        """Ask ``check_lazy_status`` which lazy inputs it needs; True if some must run first."""
        if not hasattr(obj, "check_lazy_status"):
            return False
        is_list = node.spec.is_input_list
        if any(blocker_in(kwargs, is_list) for kwargs in call_arguments(arguments, is_list)):
            return False  # a blocked node does not run at all: nothing to evaluate for it
        asked: set[str] = set()
        for answer in self.call(node, obj, "check_lazy_status", arguments):
            if isinstance(answer, (list, tuple, set)):
                asked.update(a for a in answer if isinstance(a, str))
        values = self.values
        wanted = {name for name in asked if name in node.lazy and node.links[name][0] not in values}
        if not wanted:
            return False
        self.requested_lazy.setdefault(node.id, set()).update(wanted)
        return True

    def take_results(self, node: CompiledNode, results: list[Any], arguments: dict[str, list[Any]]) -> bool:
        spec = node.spec
        output_count = len(spec.return_types)
        per_call: list[Any] = []
        uis: list[dict[str, Any]] = []
        expansions: list[dict[str, Any]] = []
        for index, result in enumerate(results):
            returned = read_result(result)  # the outputs, or {"result": ..., "ui": ..., "expand": ...}
            if returned.ui is not None:
                uis.append(returned.ui)
            value = returned.result
            if returned.expand is not None:
                graph, value = rename_expansion(node.id, index, returned.expand, value, self.dynamic)
                expansions.append(graph)
                per_call.append(("expand", value))
                continue
            per_call.append(self.slots(node, value, arguments))
        ui = merge_ui(uis)
        if expansions:
            return self.start_expansion(node, expansions, per_call, ui)
        self.store(node, merge_outputs(per_call, output_count) if per_call else [[] for _ in range(output_count)], ui)
        return True

    def slots(self, node: CompiledNode, value: Any, arguments: dict[str, list[Any]]) -> list[list[Any]]:
        spec = node.spec
        count = len(spec.return_types)
        if isinstance(value, ExecutionBlocker):
            return [[value] for _ in range(count)]
        if value is None and count == 0:
            return []
        if not isinstance(value, (tuple, list)) or len(value) < count:
            shown = summarize(value, 80)
            raise NodeFailure(node.id, PlexusError("invalid_return", f"{node.class_type} #{node.id} returned {shown}; "
                              f"it must return a tuple of {count} value(s), one per RETURN_TYPES entry "
                              f"{list(spec.return_types)}"), inputs=arguments)
        return [slot_items(value[i], spec.output_is_list[i]) for i in range(count)]

    def store(self, node: CompiledNode, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        self.values[node.id] = outputs
        self.executed.append(node.id)
        self.cache.put(self.key_builder.keys.get(node.id), CacheEntry(outputs, ui))
        if ui is not None:
            self.ui[node.id] = ui
        if self.has_listeners:
            if ui is not None:
                self.emit("executed", {"node": node.id, "display_node": node.display_id, "output": ui,
                                       "prompt_id": self.prompt_id})
            if node.id in self.progressed:
                self.emit("progress_state", {"prompt_id": self.prompt_id,
                                             "nodes": {node.id: self._node_state(node, "finished", 1, 1)}})

    # -- expansion -----------------------------------------------------------------------------------

    def start_expansion(self, node: CompiledNode, graphs: list[dict[str, Any]], per_call: list[Any],
                        ui: dict[str, Any] | None) -> bool:
        needed: list[str] = []
        for graph in graphs:
            for new_id, new_node in graph.items():
                display = new_node.get("override_display_id", node.display_id)
                self.dynamic.add_ephemeral_node(new_id, new_node, node.id, display)
            self.compile(graph, parent=node)
            needed += [n for n in graph if self.nodes[n].spec is not None and self.nodes[n].spec.is_output]
        for entry in per_call:
            if isinstance(entry, tuple) and entry[0] == "expand":
                needed += [v[0] for v in entry[1] if is_link(v)]
        self.awaiting[node.id] = (per_call, needed, ui)
        return False

    def finish_expansion(self, node: CompiledNode) -> bool:
        per_call, _, ui = self.awaiting.pop(node.id)
        spec = node.spec
        resolved = []
        for entry in per_call:
            if not (isinstance(entry, tuple) and entry[0] == "expand"):
                resolved.append(entry)
                continue
            value = entry[1]
            slots = []
            for i in range(len(spec.return_types)):
                item = value[i] if isinstance(value, (list, tuple)) and i < len(value) else None
                if is_link(item):
                    source = self.values[item[0]]
                    slots.append(list(source[item[1]]) if item[1] < len(source) else [None])
                else:
                    slots.append(slot_items(item, spec.output_is_list[i]))
            resolved.append(slots)
        self.store(node, merge_outputs(resolved, len(spec.return_types)), ui)
        return True


def _prefixed(method: Any, kwargs: dict[str, Any], node_id: str, index: int) -> Any:
    """An async node call whose GraphBuilder prefix is its own call index (tasks copy the context)."""
    async def call() -> Any:
        _PREFIX.set((node_id, index, 0))
        return await method(**kwargs)
    return call()
