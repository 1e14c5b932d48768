"""Prompts, queue, history, jobs, interrupt and free.

ComfyUI's routes with its shapes, plus two Plexus additions for clients without a websocket:
``GET /prompt/{id}/status`` and ``POST /prompt?wait=true[&timeout=S]``, which answers when the prompt
has ended (200 with its outputs) or when the timeout passes (202 with its current status).
``GET /history/{id}`` answers 200 ``{}`` for any id not (or no longer) in the history, as ComfyUI does:
clients poll it until the id appears. ``GET /prompt/{id}/status`` is the one that tells a typo (404)
from a wait.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from execution.errors import PlexusError
from execution.replacements import replace_in_prompt

from . import jobs as J
from .security import BadRequest, read_json_object
from .state import STATE, AppState

TERMINAL = {"success", "error", "interrupted"}
routes = web.RouteTableDef()


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


def _prompt_error(message: str, details: str = "", type_: str = "invalid_prompt") -> web.Response:
    return web.json_response(
        {
            "error": {"type": type_, "message": message, "details": details, "extra_info": {}},
            "node_errors": {},
        },
        status=400,
    )


def _error_json(error: Any) -> dict[str, Any]:
    if error is None:
        return {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        }
    if hasattr(error, "to_json"):
        return error.to_json()
    return dict(error)


def _is_finite_json(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_finite_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_finite_json(v, depth + 1) for v in value)
    return True


def _check_prompt_shape(prompt: Any) -> str | None:
    """The request-level shape only; empty prompts and missing or unknown ``class_type`` are the engine's
    (ComfyUI's ``prompt_no_outputs`` and ``invalid_prompt`` answers)."""
    if not isinstance(prompt, dict):
        return "'prompt' must be an object mapping node ids to {class_type, inputs}."
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            return f"node {node_id!r} must be an object with 'class_type' and 'inputs'."
        if not isinstance(node.get("inputs", {}), dict):
            return f"node {node_id!r}: 'inputs' must be an object."
    return None


@dataclass
class PromptRequest:
    """A checked POST /prompt body."""

    prompt: dict[str, Any]
    client_id: str | None
    extra_data: dict[str, Any]
    front: bool
    number: float | None
    prompt_id: str | None
    targets: list[str] | None


def _read_prompt_body(body: dict[str, Any]) -> PromptRequest | tuple[str, str, str]:
    """The request, or ``(message, details, type)`` saying what is wrong with it."""
    if "prompt" not in body:
        return "No prompt provided", 'Send {"prompt": {<node id>: {...}}}.', "no_prompt"
    problem = _check_prompt_shape(body["prompt"])
    if problem:
        return "Invalid prompt", problem, "invalid_prompt"
    if not _is_finite_json(body):
        return (
            "Invalid prompt",
            "NaN, Infinity and nesting deeper than 64 levels are not allowed.",
            "invalid_prompt",
        )
    request = PromptRequest(
        body["prompt"],
        body.get("client_id"),
        body.get("extra_data", {}),
        body.get("front", False),
        body.get("number"),
        body.get("prompt_id"),
        body.get("partial_execution_targets"),
    )
    targets, number, prompt_id = request.targets, request.number, request.prompt_id
    checks = [
        (request.client_id is None or isinstance(request.client_id, str), "'client_id' must be a string"),
        (isinstance(request.extra_data, dict), "'extra_data' must be an object"),
        (isinstance(request.front, bool), "'front' must be true or false"),
        (
            targets is None or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)),
            "'partial_execution_targets' must be a list of node ids",
        ),
        (
            prompt_id is None or (isinstance(prompt_id, str) and 0 < len(prompt_id) <= 128),
            "'prompt_id' must be a string of at most 128 characters",
        ),
        (
            number is None or (isinstance(number, (int, float)) and not isinstance(number, bool)),
            "'number' must be a number",
        ),
    ]
    for ok, message in checks:
        if not ok:
            return "Invalid prompt", message, "invalid_prompt"
    return request


def _wait_timeout_s(request: web.Request, state: AppState) -> float | None:
    """``?wait=true[&timeout=S]``: how long POST /prompt waits for the end (None: it does not)."""
    if request.query.get("wait", "").lower() not in ("1", "true", "yes"):
        return None
    try:
        timeout_s = float(request.query.get("timeout", 600))
    except ValueError:
        timeout_s = -1.0
    if not math.isfinite(timeout_s) or timeout_s < 0:
        raise BadRequest("'timeout' must be a number of seconds.")
    return min(timeout_s, state.settings.prompt_wait_max_s)


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    wait_s = _wait_timeout_s(request, state)  # checked before anything is queued
    try:
        body = await read_json_object(request)
    except BadRequest as exc:
        return _prompt_error(exc.message, exc.details, exc.type)
    plugin_api = getattr(state.services, "plugin_api", None)
    if plugin_api is not None and plugin_api.on_prompt_handlers:
        body = await state.call(plugin_api.trigger_on_prompt, body)
    asked = _read_prompt_body(body)
    if isinstance(asked, tuple):
        return _prompt_error(*asked)

    prompt = replace_in_prompt(asked.prompt, state.services.registry)  # renamed ComfyUI classes
    result = await state.call(state.services.engine.validate, prompt, asked.targets)
    if not result.ok:
        return web.json_response(
            {"error": _error_json(result.error), "node_errors": result.node_errors or {}}, status=400
        )
    prompt_id = asked.prompt_id or str(uuid.uuid4())
    create_time_ms = int(time.time() * 1000)
    extra_data = {**asked.extra_data, "create_time": create_time_ms}
    if asked.client_id is not None:
        extra_data["client_id"] = asked.client_id
    # A plain mapping with PromptRecord's fields: the store keeps records as JSON.
    record = {
        "prompt_id": prompt_id,
        "number": asked.number,
        "prompt": prompt,
        "extra_data": extra_data,
        "client_id": asked.client_id,
        "outputs_to_execute": list(result.outputs_to_execute),
        "create_time_ms": create_time_ms,
    }
    try:
        stored = await state.call(state.services.store.put, record, asked.front, asked.number)
    except PlexusError as exc:  # the store refuses an id it already holds
        return web.json_response({"error": exc.to_json(), "node_errors": {}}, status=400)
    except ValueError:
        return _prompt_error(
            "Invalid prompt", f"prompt_id {prompt_id!r} is already in use.", "duplicate_prompt_id"
        )
    number = stored["number"] if isinstance(stored, dict) else getattr(stored, "number", None)
    answer = {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors or {}}
    if wait_s is None:
        return web.json_response(answer)
    return await _answer_when_done(state, answer, wait_s)


async def _answer_when_done(state: AppState, answer: dict[str, Any], wait_s: float) -> web.Response:
    """POST /prompt?wait=true: 200 with the outputs once the prompt ended, 202 if ``wait_s`` passed first."""
    prompt_id = answer["prompt_id"]
    status = await state.wait_for_end(prompt_id, wait_s)
    answer["status"] = status
    if status not in TERMINAL:
        return web.json_response({**answer, "timed_out": True}, status=202)
    entry = await state.call(state.services.store.history_item, prompt_id) or {}
    answer["outputs"] = entry.get("outputs", {})
    answer["status_detail"] = entry.get("status", {})
    if status == "error":
        answer["error"] = (entry.get("plexus") or {}).get("error") or next(
            (m[1] for m in J.messages_of(entry) if m[0] == "execution_error"), None
        )
    return web.json_response(answer)


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(await _state(request).queue_status())


@routes.get("/prompt/{prompt_id}/status")
async def get_prompt_status(request: web.Request) -> web.Response:
    state = _state(request)
    prompt_id = request.match_info["prompt_id"]
    status = await state.call(state.services.store.status_of, prompt_id)
    if status is None:
        raise web.HTTPNotFound(text=f"No prompt with id {prompt_id!r}.")
    return web.json_response({"prompt_id": prompt_id, "status": status})


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    state = _state(request)
    running = await state.call(state.services.store.running)
    pending = await state.call(state.services.store.pending)
    return web.json_response(
        {
            "queue_running": [J.queue_item(r) for r in running],
            "queue_pending": [J.queue_item(r) for r in pending],
        }
    )


async def _delete_or_clear(request: web.Request, *, clear: Any, delete: Any) -> web.Response:
    body = await read_json_object(request, allow_empty=True)
    if "clear" in body and not isinstance(body["clear"], bool):
        raise BadRequest("'clear' must be true or false.")
    ids = body.get("delete", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'delete' must be a list of prompt ids.")
    state = _state(request)
    if body.get("clear"):
        await state.call(clear)
    if ids:
        await state.call(delete, ids)
    return web.json_response({})


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    store = _state(request).services.store
    return await _delete_or_clear(request, clear=store.clear_pending, delete=store.delete_pending)


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request, allow_empty=True)
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise BadRequest("'prompt_id' must be a string.")
    if prompt_id is None:
        state.services.engine.interrupt()
    else:
        running = {J.record_id(r) for r in await state.call(state.services.store.running)}
        if prompt_id in running:
            state.services.engine.interrupt(prompt_id)
    return web.json_response({})


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request, allow_empty=True)
    unload = body.get("unload_models", False)
    free = body.get("free_memory", False)
    if not isinstance(unload, bool) or not isinstance(free, bool):
        raise BadRequest("'unload_models' and 'free_memory' must be true or false.")
    if free:
        await state.call_slow(state.services.engine.clear_cache)
    if (unload or free) and state.services.free_memory is not None:
        await state.call_slow(state.services.free_memory, unload_models=unload, free_memory=free)
    return web.json_response({})


def _int_query(
    request: web.Request, name: str, default: int | None, *, low: int = 0, high: int = 1 << 31
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer.", f"got {raw!r}")
    return max(low, min(high, value))


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    state = _state(request)
    max_items = _int_query(request, "max_items", None, low=0)
    # ComfyUI's default offset -1 with max_items: the newest max_items entries.
    offset = _int_query(request, "offset", -1, low=-1)
    return web.json_response(await state.call(state.services.store.history, max_items, offset))


@routes.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    state = _state(request)
    prompt_id = request.match_info["prompt_id"]
    entry = await state.call(state.services.store.history_item, prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    store = _state(request).services.store
    return await _delete_or_clear(request, clear=store.clear_history, delete=store.delete_history)


# --- jobs (editor 1.58) ----------------------------------------------------------------------------
@routes.get("/jobs")
async def get_jobs(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        wanted = J.parse_statuses(request.query.get("status"))
    except ValueError as exc:
        raise BadRequest(str(exc))
    limit = _int_query(request, "limit", 200, low=1, high=10000)
    offset = _int_query(request, "offset", 0, low=0)
    order = request.query.get("sort_order", "desc").lower()
    store = state.services.store
    items: list[dict[str, Any]] = []
    if "in_progress" in wanted:
        items += [J.job_from_record(r, "in_progress") for r in await state.call(store.running)]
    if "pending" in wanted:
        items += sorted(
            (J.job_from_record(r, "pending") for r in await state.call(store.pending)),
            key=lambda j: j["priority"],
        )
    finished_wanted = J.FINISHED & set(wanted)
    total = len(items)
    if finished_wanted == J.FINISHED:
        # The editor's case (all finished jobs, newest first): read only the page from the store.
        count = await state.call(store.history_count)
        need = max(0, offset + limit - len(items))
        if order == "asc":
            history = await state.call(store.history, need, 0)
        else:
            history = dict(reversed((await state.call(store.history, need, -1)).items()))
        items += [J.job_from_history(pid, entry) for pid, entry in history.items()]
        total += count
    elif finished_wanted:
        history = await state.call(store.history, None, 0)
        finished = [J.job_from_history(pid, entry) for pid, entry in history.items()]
        finished = [j for j in finished if j["status"] in wanted]
        finished.sort(
            key=lambda j: (j["execution_end_time"] or 0, j["create_time"]), reverse=(order != "asc")
        )
        items += finished
        total += len(finished)
    page = items[offset : offset + limit]
    return web.json_response(
        {
            "jobs": page,
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": total,
                "has_more": offset + len(page) < total,
            },
        }
    )


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    state = _state(request)
    job_id = request.match_info["job_id"]
    store = state.services.store
    entry = await state.call(store.history_item, job_id)
    if entry is not None:
        return web.json_response(J.job_detail_from_history(job_id, entry))
    for status, records in (("in_progress", store.running), ("pending", store.pending)):
        for record in await state.call(records):
            if J.record_id(record) == job_id:
                return web.json_response(J.job_detail_from_record(record, status))
    raise web.HTTPNotFound(text=f"No job with id {job_id!r}.")


async def _cancel(state: AppState, ids: list[str]) -> None:
    store = state.services.store
    running = {J.record_id(r) for r in await state.call(store.running)}
    pending_ids = [i for i in ids if i not in running]
    if pending_ids:
        await state.call(store.delete_pending, pending_ids)
    for job_id in ids:
        if job_id in running:
            state.services.engine.interrupt(job_id)


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    await _cancel(_state(request), [request.match_info["job_id"]])
    return web.json_response({})


@routes.post("/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    body = await read_json_object(request, allow_empty=True)
    ids = body.get("job_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'job_ids' must be a list of job ids.")
    await _cancel(_state(request), ids)
    return web.json_response({})
