"""Pure-Python test nodes for the executor, validator and cache tests (no torch).

Every node function appends ``(class_type, node id)`` to :data:`CALLS` so tests can see exactly
what ran; :func:`make_registry` gives a fresh registry with all of them.
"""
from __future__ import annotations

import threading
from typing import Any

from execution.protocol import ExecutionBlocker, GraphBuilder, current_context
from execution.registry import NodeRegistry

CALLS: list[tuple[str, str]] = []
STATE: dict[str, Any] = {}


def called(class_type: str, unique_id: str) -> None:
    CALLS.append((class_type, unique_id))


def ran(class_type: str | None = None) -> list[str]:
    """Node ids that ran (of one class, if given), in order."""
    return [node_id for kind, node_id in CALLS if class_type is None or kind == class_type]


HIDDEN = {"hidden": {"unique_id": "UNIQUE_ID"}}


class Const:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value, unique_id):
        called("Const", unique_id)
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("sum",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, a, b, unique_id):
        called("Add", unique_id)
        return (a + b,)


class SumMany:
    """Fan-in: adds any linked inputs it gets (undeclared linked inputs are passed, as in ComfyUI)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, unique_id, **values):
        called("SumMany", unique_id)
        return (sum(values.values()),)


class Output:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}, **HIDDEN}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def run(self, value, unique_id):
        called("Output", unique_id)
        return {"ui": {"values": [value]}}


class Scale:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.1}),
                             "mode": (["double", "triple"], {"default": "double"}),
                             "label": ("STRING", {"multiline": True, "default": ""}),
                             "enabled": ("BOOLEAN", {"default": True})}}
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, x, mode, label, enabled):
        called("Scale", "")
        return (x * (2 if mode == "double" else 3) if enabled else x,)


class Pick:
    """A combo in the newer spelling."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler": ("COMBO", {"options": ["euler", "euler_ancestral", "dpmpp_2m"]})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, sampler):
        return (sampler,)


class LoadModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "m"})}}
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, name):
        return ({"model": name},)


class UseModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "strength": ("FLOAT", {"default": 1.0})}}
    RETURN_TYPES = ("MODEL,LATENT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, model, strength):
        return (model,)


class Switch:
    """Lazy: only the chosen branch is evaluated."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choose_a": ("BOOLEAN", {"default": True}),
                             "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def check_lazy_status(self, choose_a, a=None, b=None, unique_id=None):
        if choose_a:
            return ["a"] if a is None else []
        return ["b"] if b is None else []

    def run(self, choose_a, a=None, b=None, unique_id=None):
        called("Switch", unique_id)
        return (a if choose_a else b,)


class MakeList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3}), "start": ("INT", {"default": 0})}}
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, count, start):
        return (list(range(start, start + count)),)


class SumList:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT",)}}
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, values):
        return (sum(values),)


class Fail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value, unique_id):
        called("Fail", unique_id)
        if STATE.get("fail", True):
            raise ValueError(f"boom {value}")
        return (value,)


class AsyncAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("INT",)}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    async def run(self, a, b, unique_id):
        import asyncio
        await asyncio.sleep(0)
        called("AsyncAdd", unique_id)
        return (a + b,)


class Block:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "block": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": ""})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value, block, message):
        return (ExecutionBlocker(message or None) if block else value,)


class SumLoop:
    """A loop built from expansion: adds i, i+1, ..., n-1 to acc by expanding itself."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"i": ("INT",), "n": ("INT",), "acc": ("INT",)}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, i, n, acc, unique_id):
        called("SumLoop", unique_id)
        if i >= n:
            return (acc,)
        g = GraphBuilder()
        step = g.node("Add", a=acc, b=i)
        nxt = g.node("SumLoop", i=i + 1, n=n, acc=step.out(0))
        return {"result": (nxt.out(0),), "expand": g.finalize()}


class Progress:
    """Reports progress; waits on STATE['gate'] (an Event) between steps when one is set."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, steps, unique_id):
        called("Progress", unique_id)
        context = current_context()
        for step in range(steps):
            reached: threading.Event | None = STATE.get("reached")
            if reached is not None:
                reached.set()
            gate: threading.Event | None = STATE.get("gate")
            if gate is not None:
                gate.wait(5)
            context.report_progress(step + 1, steps)
        return (steps,)


class Changing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "x"})}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def IS_CHANGED(cls, name):
        return STATE.get("version", 0)

    def run(self, name, unique_id):
        called("Changing", unique_id)
        return (STATE.get("version", 0),)


class Random:
    NOT_IDEMPOTENT = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, **HIDDEN}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, unique_id):
        called("Random", unique_id)
        return (len(CALLS),)


class Checked:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": 0, "max": 10})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value != 7 else "seven is not allowed"

    def run(self, value):
        return (value,)


class Hidden:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO",
                                           "unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT"}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def run(self, prompt, extra, unique_id, dynprompt):
        STATE["hidden"] = (prompt, extra, unique_id, dynprompt)
        return {"ui": {"id": [unique_id]}}


class Stateful:
    """Stores state on self, as plugins do."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    NOT_IDEMPOTENT = True
    CATEGORY = "test"

    def run(self, value):
        self.count = getattr(self, "count", 0) + 1
        return (self.count,)


NODES = {cls.__name__: cls for cls in (Const, Add, SumMany, Output, Scale, Pick, LoadModel, UseModel, Switch,
                                       MakeList, SumList, Fail, AsyncAdd, Block, SumLoop, Progress, Changing,
                                       Random, Checked, Hidden, Stateful)}


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for name, cls in NODES.items():
        registry.register(name, cls, display_name=f"Test {name}", python_module="tests")
    return registry


def reset() -> None:
    CALLS.clear()
    STATE.clear()
