"""Prompt validation before anything runs: every problem at once, in ComfyUI's shapes and type names.

``validate_prompt`` checks the prompt's shape and class names, then each output's chain of inputs:
links (shape, target node, output index, socket types), constants (type, NaN, min/max, combo
lists), ``VALIDATE_INPUTS`` and dependency cycles. An output whose chain is valid still runs when
another output's chain is not, as in ComfyUI.
"""
from __future__ import annotations

import difflib
import json
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from execution.errors import ValidationIssue
from execution.loop import run_blocking
from execution.protocol import ExecutionBlocker, is_link, types_compatible
from execution.specs import (ClassSpec, CoercionError, SpecCache, check_range, coerce_constant, inputs_for,
                             takes_literal)

CYCLE = "dependency_cycle"


@dataclass
class Outcome:
    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def closest_name(value: Any, choices: list[Any]) -> str | None:
    """The string choice closest to ``value`` (difflib, then a case-insensitive match), or None."""
    names = [c for c in choices if isinstance(c, str)]
    if not isinstance(value, str) or not names:
        return None
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    return {n.lower(): n for n in names}.get(value.lower())


def did_you_mean(value: Any, choices: list[Any]) -> str:
    """``"; did you mean 'x'?"`` for the closest string choice, or ``""``."""
    close = closest_name(value, choices)
    return f"; did you mean '{close}'?" if close else ""


def full_type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module in (None, "builtins") else f"{module}.{kind.__qualname__}"


def _prompt_error(kind: str, message: str, details: str = "", **extra: Any) -> Outcome:
    return Outcome(False, {"type": kind, "message": message, "details": details, "extra_info": extra})


def parse_prompt(prompt: Any) -> tuple[dict[str, Any] | None, Outcome | None]:
    """The prompt as a dict of node dicts, or an ``invalid_prompt`` outcome explaining the problem."""
    if isinstance(prompt, (bytes, bytearray)):
        prompt = prompt.decode("utf-8", errors="replace")
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except ValueError as exc:
            return None, _prompt_error("invalid_prompt", "Cannot execute because the prompt is not valid "
                                       "JSON; send an object of {node_id: {class_type, inputs}}", str(exc))
    if not isinstance(prompt, dict):
        return None, _prompt_error("invalid_prompt", "Cannot execute because the prompt is not an object "
                                   "of {node_id: {class_type, inputs}}", f"got {type(prompt).__name__}")
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            return None, _prompt_error("invalid_prompt", f"Cannot execute because node #{node_id} is not an "
                                       "object with 'class_type' and 'inputs'", f"Node ID '#{node_id}'")
        if not isinstance(node.get("inputs", {}), dict):
            return None, _prompt_error("invalid_prompt", f"Cannot execute because the 'inputs' of node "
                                       f"#{node_id} is not an object", f"Node ID '#{node_id}'")
    return prompt, None


def _class_error(prompt: dict[str, Any], registry: Any) -> Outcome | None:
    """ComfyUI's prompt-level ``invalid_prompt`` for the first node (in prompt order) whose ``class_type``
    is missing or unknown: its exact messages, which clients match on, and ``details`` naming the node.
    ``extra_info`` adds the node, the class and the closest registered name."""
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return _prompt_error("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                 "property.", f"Node ID '#{node_id}'", node_id=node_id, class_type=None)
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in registry:
            extra: dict[str, Any] = {"node_id": node_id, "class_type": class_type}
            close = closest_name(class_type, registry.names())
            if close:
                extra["did_you_mean"] = close
            return _prompt_error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                 f"Node ID '#{node_id}'", **extra)
    return None


class _NodeChecker:
    """The issues of one node on its own (its links' targets are checked separately)."""

    def __init__(self, prompt: dict[str, Any], specs: SpecCache, link_only_types: frozenset[str]):
        self.prompt = prompt
        self.specs = specs
        self.link_only_types = link_only_types

    def spec_of(self, node_id: str) -> ClassSpec | None:
        try:
            return self.specs.get(self.prompt[node_id]["class_type"])
        except Exception:  # noqa: BLE001 - the spec's own failure is reported on that node
            return None

    def check(self, node_id: str) -> list[ValidationIssue]:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        where = f"{class_type} #{node_id}"
        try:
            spec = self.specs.get(class_type)
        except Exception as exc:  # noqa: BLE001 - plugin INPUT_TYPES may raise anything
            return [self._exception(node_id, where, "INPUT_TYPES", exc)]
        inputs = node.get("inputs", {})
        issues: list[ValidationIssue] = []
        constants: dict[str, Any] = {}
        received: dict[str, Any] = {}
        for name, input_spec in inputs_for(spec, inputs).items():
            if name not in inputs:
                if input_spec.is_required:
                    issues.append(ValidationIssue(
                        "required_input_missing", f"{where} is missing its required input '{name}'; connect "
                        f"a {input_spec.type_name} or set a value", name, node_id, name))
                continue
            value = inputs[name]
            config = _InputConfig(input_spec.type, input_spec.options)
            if isinstance(value, list):
                issue = self._check_link(node_id, where, spec, name, value, config, received)
                if issue is not None:
                    issues.append(issue)
                continue
            if not takes_literal(input_spec, self.link_only_types):
                issues.append(ValidationIssue(
                    "invalid_input_type", f"{where} input '{name}' takes a {input_spec.type_name} from a link, "
                    f"not the literal value {value!r}; connect a node that outputs {input_spec.type_name}",
                    f"{name}, {value!r}", node_id, name, {"input_config": config.json(), "received_value": _jsonable(value)}))
                continue
            try:
                value = coerce_constant(input_spec, value)
            except CoercionError as exc:
                issues.append(ValidationIssue(
                    "invalid_input_type", f"{where} input '{name}': {exc}; it takes a {input_spec.type_name} "
                    f"value", f"{name}, {value!r}, {exc}", node_id, name,
                    {"input_config": config.json(), "received_value": _jsonable(value), "exception_message": str(exc)}))
                continue
            constants[name] = value
            if name in spec.validate_args or spec.validate_has_kwargs:
                continue  # VALIDATE_INPUTS takes this input over
            problem = check_range(input_spec, value)
            if problem is not None:
                kind, reason = problem
                issues.append(ValidationIssue(
                    kind, f"{where} input '{name}': {reason}", name, node_id, name,
                    {"input_config": config.json(), "received_value": value}))
                continue
            options = input_spec.combo_options
            if options is not None and value not in options:
                listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
                issues.append(ValidationIssue(
                    "value_not_in_list", f"{where} input '{name}': '{value}' is not one of the choices"
                    f"{did_you_mean(value, options) or ''}", f"{name}: '{value}' not in {listed}", node_id, name,
                    {"input_config": config.json() if len(options) <= 20 else None, "received_value": _jsonable(value)}))
        if not issues and spec.validate_fn is not None and (spec.validate_args or spec.validate_has_kwargs):
            issues += self._custom(node_id, where, spec, inputs, constants, received)
        return issues

    def _check_link(self, node_id: str, where: str, spec: ClassSpec, name: str, value: list, config: _InputConfig,
                    received: dict[str, Any]) -> ValidationIssue | None:
        def extra() -> dict[str, Any]:  # built only for an error: it costs a JSON round trip
            return {"input_config": config.json(), "received_value": _jsonable(value)}

        if not is_link(value):
            return ValidationIssue("bad_linked_input", f"{where} input '{name}' is a bad link {value!r}; a link "
                                   "must be a length-2 list of [node_id, output_index]", name, node_id, name, extra())
        source_id, index = value
        if source_id not in self.prompt:
            return ValidationIssue("bad_linked_input", f"{where} input '{name}' links to node #{source_id}, which "
                                   "is not in the prompt; reconnect the input", f"{name}, node #{source_id} missing",
                                   node_id, name, {**extra(), "linked_node": value})
        source = self.spec_of(source_id)
        if source is None:
            return None  # the source's own problem is reported on the source
        if not 0 <= index < len(source.return_types):
            return ValidationIssue(
                "bad_linked_input", f"{where} input '{name}' links to output {index} of "
                f"{source.class_type} #{source_id}, which has {len(source.return_types)} output(s)",
                f"{name}, output index {index} out of range", node_id, name, {**extra(), "linked_node": value})
        received_type = source.return_types[index]
        received[name] = received_type
        if "input_types" not in spec.validate_args and not types_compatible(received_type, config.type):
            shown = config.type if isinstance(config.type, str) else "COMBO"
            return ValidationIssue(
                "return_type_mismatch", f"{where} input '{name}' takes {shown} but is linked to output {index} "
                f"of {source.class_type} #{source_id}, which is {_type_text(received_type)}",
                f"{name}, received_type({_type_text(received_type)}) mismatch input_type({shown})", node_id, name,
                {"input_config": config.json(), "received_type": _jsonable(received_type), "linked_node": value})
        return None

    def _custom(self, node_id: str, where: str, spec: ClassSpec, inputs: dict[str, Any],
                constants: dict[str, Any], received: dict[str, Any]) -> list[ValidationIssue]:
        wanted = spec.validate_args
        arguments: dict[str, Any] = {}
        for name in spec.inputs:
            if name in constants and (spec.validate_has_kwargs or name in wanted):
                arguments[name] = constants[name]
            elif name in wanted and name in inputs:
                arguments[name] = None  # linked: not known before the run
        for name, kind in ({} if spec.is_hidden_from_context else spec.hidden).items():
            if name in wanted:
                arguments[name] = {"PROMPT": self.prompt, "UNIQUE_ID": node_id}.get(kind)
        if "input_types" in wanted:
            arguments["input_types"] = received
        try:
            outcome = run_blocking(spec.validate_fn(**arguments))
        except Exception as exc:  # noqa: BLE001 - plugin VALIDATE_INPUTS may raise anything
            return [self._exception(node_id, where, "VALIDATE_INPUTS", exc)]
        if outcome is True or isinstance(outcome, ExecutionBlocker):
            return []
        reason = "" if outcome is False else str(outcome)
        first = next(iter(arguments), None)
        return [ValidationIssue("custom_validation_failed", f"{where} failed its own input check"
                                f"{': ' + reason if reason else ''}", f"{first} - {reason}" if reason else str(first),
                                node_id, first)]

    @staticmethod
    def _exception(node_id: str, where: str, what: str, exc: Exception) -> ValidationIssue:
        return ValidationIssue(
            "exception_during_validation", f"{where}: {what} raised {type(exc).__name__}: {exc}", str(exc), node_id,
            extra_info={"exception_type": full_type_name(type(exc)),
                        "traceback": traceback.format_tb(sys.exc_info()[2])})


class _InputConfig:
    """An input's ``[type, options]`` for error reports, made JSON-safe only when an error needs it."""

    __slots__ = ("options", "type")

    def __init__(self, input_type: Any, options: dict[str, Any]):
        self.type = input_type
        self.options = options

    def json(self) -> Any:
        return _jsonable([self.type, self.options])


def _type_text(value: Any) -> str:
    return value if isinstance(value, str) else "COMBO"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _links(node: dict[str, Any], prompt: dict[str, Any]) -> list[str]:
    return [v[0] for v in node.get("inputs", {}).values() if is_link(v) and v[0] in prompt]


def strongly_connected(roots: list[str], edges: Any) -> list[list[str]]:
    """Tarjan's SCCs of the graph reachable from ``roots``, dependencies before dependents.

    ``edges(node)`` lists a node's dependencies. Iterative, so deep chains do not hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in roots:
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def validate_prompt(registry: Any, prompt: Any, partial_targets: list[str] | None = None) -> Outcome:
    parsed, failure = parse_prompt(prompt)
    if failure is not None:
        return failure
    prompt = parsed
    failure = _class_error(prompt, registry)
    if failure is not None:
        return failure

    specs = SpecCache(registry)
    checker = _NodeChecker(prompt, specs, registry.output_types())
    targets = None if partial_targets is None else set(partial_targets)
    outputs = []
    own: dict[str, list[ValidationIssue]] = {}
    for node_id in prompt:
        try:
            spec = specs.get(prompt[node_id]["class_type"])
        except Exception as exc:  # noqa: BLE001 - plugin INPUT_TYPES may raise anything
            own[node_id] = [checker._exception(node_id, f"{prompt[node_id]['class_type']} #{node_id}",
                                               "INPUT_TYPES", exc)]
            continue
        if spec.is_output and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        # ComfyUI's exact message (clients match on it); the details say how to fix it.
        return _prompt_error("prompt_no_outputs", "Prompt has no outputs",
                             "add an output node (one with OUTPUT_NODE = True, e.g. SaveImage)" if targets is None
                             else "none of the partial execution targets is an output node")

    components = strongly_connected(outputs, lambda n: _links(prompt[n], prompt))
    is_valid: dict[str, bool] = {}
    order = {node_id: i for i, node_id in enumerate(prompt)}
    for component in components:
        members = set(component)
        cyclic = len(component) > 1 or component[0] in _links(prompt[component[0]], prompt)
        for node_id in component:
            if node_id not in own:
                own[node_id] = checker.check(node_id)
        if cyclic:
            first = min(component, key=order.__getitem__)
            path = " needs ".join(f"#{n}" for n in _cycle_path(first, members, prompt))
            own[first] = own[first] + [ValidationIssue(
                CYCLE, f"{prompt[first]['class_type']} #{first} is part of a dependency cycle ({path}); remove "
                "one of these links", path, first, extra_info={"cycle": sorted(members, key=order.__getitem__)})]
        for node_id in component:
            sources_ok = all(is_valid.get(s, False) for s in _links(prompt[node_id], prompt) if s not in members)
            is_valid[node_id] = not cyclic and not own[node_id] and sources_ok

    good = [o for o in outputs if is_valid[o]]
    node_errors: dict[str, Any] = {}
    messages: list[str] = []
    for output in outputs:
        if is_valid[output]:
            continue
        for node_id in _ancestors(output, prompt):
            if own.get(node_id):
                entry = node_errors.get(node_id)
                if entry is None:
                    entry = node_errors[node_id] = {"errors": [i.to_json() for i in own[node_id]],
                                                    "dependent_outputs": [],
                                                    "class_type": prompt[node_id]["class_type"]}
                    messages += [f"{i.message}: {i.details}" for i in own[node_id]]
                entry["dependent_outputs"].append(output)
    if not good:
        return Outcome(False, {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                               "validation", "details": "\n".join(messages), "extra_info": {}}, node_errors)
    return Outcome(True, None, node_errors, good)


def _ancestors(output: str, prompt: dict[str, Any]) -> list[str]:
    seen = {output}
    stack = [output]
    found = []
    while stack:
        node_id = stack.pop()
        found.append(node_id)
        for source in _links(prompt[node_id], prompt):
            if source not in seen:
                seen.add(source)
                stack.append(source)
    return found


def _cycle_path(start: str, members: set[str], prompt: dict[str, Any]) -> list[str]:
    """One cycle through ``start`` inside its strongly connected component (BFS back to ``start``)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node_id in frontier:
            for source in _links(prompt[node_id], prompt):
                if source not in members:
                    continue
                if source == start:
                    path = [start]
                    while node_id != start:
                        path.append(node_id)
                        node_id = parents[node_id]
                    path.append(start)
                    return path[::-1] if len(path) > 2 else path
                if source not in parents:
                    parents[source] = node_id
                    next_frontier.append(source)
        frontier = next_frontier
    return [start, start]
