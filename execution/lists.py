"""ComfyUI's list semantics: how a node is called over list inputs and how its results are merged.

Every value travelling between nodes is a list (usually of one item). A node with
``INPUT_IS_LIST = True`` is called once with the whole lists. Any other node is called once per
index of its longest input, a shorter list repeating its last item. ``OUTPUT_IS_LIST[i]`` marks an
output whose returned value is itself a list to concatenate; other outputs collect one item per call.
"""
from __future__ import annotations

from typing import Any

from execution.protocol import ExecutionBlocker


def call_arguments(inputs: dict[str, list[Any]], is_input_list: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each call of the node (no call at all when an input list is empty)."""
    if is_input_list or not inputs:
        return [inputs if is_input_list else {}]
    count = 1
    for values in inputs.values():
        length = len(values)
        if length != 1:
            if length == 0:
                return []  # an empty list input: nothing to map over
            count = max(count, length)
    if count == 1:
        return [{name: values[0] for name, values in inputs.items()}]
    return [{name: values[index] if index < len(values) else values[-1] for name, values in inputs.items()}
            for index in range(count)]


def blocker_in(arguments: dict[str, Any], is_input_list: bool) -> ExecutionBlocker | None:
    """The first :class:`ExecutionBlocker` among one call's arguments, if any."""
    for value in arguments.values():
        if isinstance(value, ExecutionBlocker):
            return value
        if is_input_list and isinstance(value, list):
            for item in value:
                if isinstance(item, ExecutionBlocker):
                    return item
    return None


def merge_outputs(call_results: list[list[list[Any]]], output_count: int) -> list[list[Any]]:
    """Concatenate per-call slot lists: ``call_results[call][slot]`` is already a list of items."""
    if len(call_results) == 1:
        return call_results[0]
    merged: list[list[Any]] = [[] for _ in range(output_count)]
    for slots in call_results:
        for index in range(output_count):
            merged[index].extend(slots[index])
    return merged


def slot_items(value: Any, is_list: bool) -> list[Any]:
    """One call's value for one output slot, as the list of items it contributes."""
    if isinstance(value, ExecutionBlocker):
        return [value]
    if is_list:
        return list(value) if isinstance(value, (list, tuple)) else [value]
    return [value]


def merge_ui(uis: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One ui dict from the ui dicts of several calls (list values concatenated, as ComfyUI does)."""
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
            else:
                merged[key] = list(value) if isinstance(value, list) else value
    return merged
